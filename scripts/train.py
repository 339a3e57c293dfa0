#!/usr/bin/env python
"""Fine-tune a ViT on the prepared BPS folder.

    python scripts/train.py configs/demo.yaml
    accelerate launch scripts/train.py configs/bps_vit_base.yaml --per_device_train_batch_size 64
    torchrun --nproc_per_node 4 scripts/train.py configs/bps_vit_base.yaml
"""

from bps_vit.train import main

if __name__ == "__main__":
    main()
