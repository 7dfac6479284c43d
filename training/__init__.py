"""Training: datasets, jobs and the LoRA trainer. Built in the dataset and
retraining issues; empty until then."""
