"""The model layer: networks, the LightningModule, training, and the model-file format."""
