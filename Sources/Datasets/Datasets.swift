// Dataset layouts, splits, the image cache and the synthetic data generator.
