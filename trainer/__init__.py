"""The Trainer's module: input, model, two-phase training and export."""
