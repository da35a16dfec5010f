"""The data layer: source kinds, the splits and their format on disk, the Lightning datamodule."""
