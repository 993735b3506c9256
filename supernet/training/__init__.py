"""Training the supernet and the models extracted from it: the sandwich rule's loss and its schedule
(`train`), the loop every trainer shares (`loop`), data-parallel groups (`distributed`), several archs in
one pass (`multi_arch`) and an extracted model's fine-tuning (`finetune`)."""
