"""The fine-tuning stage: the search's front trained further as Ray Tune trials (`stage`), its
candidates and their ranking metric (`candidates`), the trial (`trainable`), the schedulers that
stop candidates early (`schedulers`), and the fine-tuned results the delivery reads (`results`)."""
