"""The explanation methods, one file per method over a shared base (`base`): one call shape, model + pixel batch +
target class -> one heatmap per image at the input resolution."""
