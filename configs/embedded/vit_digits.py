# The embedded default: a small ViT segmenting digit mosaic scenes (64x64, 11 classes).
#
# Data: written by cpd.data.digit_mosaic.write_mmseg_layout(data_root, n_train, n_val, seed).
# Train: python tools/train.py configs/embedded/vit_digits.py --cfg-options data_root=PATH max_iters=N
#
# The top-level knobs `data_root`, `max_iters`, `warmup_iters` and `val_interval` are used in several places;
# mmengine resolves them when it reads this file, so `knobs` lists where each one goes and
# tools/train.py (cpd.mm.train.expand_knobs) sets all of them from one `--cfg-options name=value`.
#
# Recipe (batch 32, AdamW lr 2e-3, wd 0.05, 100 warm-up iterations, cosine, plain cross-entropy):
# a pure-PyTorch ViT of this shape reached mIoU 0.68 after 860 steps and 0.86-0.88 after 2,600 on
# a CPU. This config reached mIoU 0.708 with max_iters=600 (12,000 training scenes, seed 0), at
# 0.14-0.2 s per iteration with one thread on a busy 2-core machine; 2,000 iterations, the default,
# should pass 0.8 in about 3-5 minutes of CPU. On a shared CPU set OMP_NUM_THREADS=1: threads that
# wait for a busy core made iterations several times slower.

data_root = 'data/generated/digit_mosaic'
max_iters = 2000
warmup_iters = 100
val_interval = 500
knobs = dict(
    data_root=[
        'train_dataloader.dataset.data_root',
        'val_dataloader.dataset.data_root',
        'test_dataloader.dataset.data_root',
    ],
    max_iters=['train_cfg.max_iters', 'param_scheduler.1.end'],
    warmup_iters=['param_scheduler.0.end', 'param_scheduler.1.begin'],
    val_interval=['train_cfg.val_interval', 'default_hooks.checkpoint.interval'],
)

custom_imports = dict(
    imports=['cpd.mm.digits', 'cpd.mm.heads', 'cpd.mm.dvclive_hook'], allow_failed_imports=False)
default_scope = 'mmseg'

crop_size = (64, 64)
num_classes = 11
patch_size = 8
embed_dims = 96

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='VisionTransformer',
        img_size=crop_size,
        patch_size=patch_size,
        in_channels=3,
        embed_dims=embed_dims,
        num_layers=4,
        num_heads=3,
        mlp_ratio=2,
        out_indices=-1,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        with_cls_token=True,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        interpolate_mode='bicubic'),
    # A linear classifier per patch token that predicts all 8x8 pixels of its patch
    # (1x1 conv to 11 * 8 * 8 channels, then pixel_shuffle): 68k parameters.
    decode_head=dict(
        type='PixelShuffleHead',
        scale=patch_size,
        in_channels=embed_dims,
        channels=embed_dims,
        in_index=0,
        num_classes=num_classes,
        dropout_ratio=0.0,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

dataset_type = 'DigitMosaicDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=val_interval,
        max_keep_ckpts=1,
        save_best='mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# dir=None: <work_dir>/dvclive.
custom_hooks = [dict(type='DVCLiveLoggerHook', interval=50, dir=None)]

# tools/train.py switches the backend to gloo (and DDP to no device ids) when there is no CUDA.
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
