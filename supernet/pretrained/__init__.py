"""Pretrained Hugging Face models as supernets: one small adapter per family (`families`), the
import of their weights into the elastic model (`importing`), and the importance order of heads and
MLP neurons (`importance`)."""
