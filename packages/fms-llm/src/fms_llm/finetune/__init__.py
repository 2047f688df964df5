"""Fine-tuning: from a pretrained language model to an assistant."""
