# The original example: DeiT-S/16 + UperNet on ADE20K (mmseg's vit_deit-s16_upernet_8xb2-80k_ade20k-512x512:
# AdamW, 80k iterations, 8 GPUs x 2 images), trained with the PruningHook.
#
#   cpd comb configs/ade20k/deit-s16_upernet_8xb2-80k_ade20k-512x512_prune.py --out deps.json
#   tools/dist_train.sh configs/ade20k/deit-s16_upernet_8xb2-80k_ade20k-512x512_prune.py 8
#
# Every 50 iterations the least important channels and heads (Hessian criterion, summed over the 50 batches)
# are masked, 4 points of parameter sparsity at a time; at 40 % the cut model and its plan go to
# <work_dir>/thr_0.4.pth, then the model is cut for real and trains on to 80k iterations (best_pruned.pth
# keeps its best validation mIoU).  The backbone starts from ImageNet DeiT-S weights at `model.pretrained`
# (as in mmseg); to prune an already trained segmentor instead, set load_from to its checkpoint.
#
# Knobs (tools/train.py --cfg-options NAME=VALUE sets every place they are used): data_root, crop_size
# (the model's input size: backbone img_size, preprocessor and crop; deps.json must be made at the same size,
# `cpd comb ... --size H W`), max_iters and warmup_iters.

_base_ = 'mmseg::vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py'

custom_imports = dict(imports=['cpd.mm.pruning_hook'], allow_failed_imports=False)

custom_hooks = [
    dict(
        type='PruningHook',
        priority='LOWEST',
        interval=50,
        prune_cfg='deps.json',
        save_sparsity_thr=[0.4],
        continue_finetune=True),
]

data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
max_iters = 80000
warmup_iters = 1500
knobs = dict(
    data_root=[
        'train_dataloader.dataset.data_root',
        'val_dataloader.dataset.data_root',
        'test_dataloader.dataset.data_root',
    ],
    crop_size=[
        'model.data_preprocessor.size',
        'model.backbone.img_size',
        'train_dataloader.dataset.pipeline.3.crop_size',
    ],
    max_iters=['train_cfg.max_iters', 'param_scheduler.1.end'],
    warmup_iters=['param_scheduler.0.end', 'param_scheduler.1.begin'],
)
