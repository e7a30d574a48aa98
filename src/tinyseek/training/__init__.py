"""Training: the LightningModule, callbacks, schedule and the fit loop."""
