# The embedded classification default: a small ResNet reading two digits of a 32x32 scene and
# naming the larger of the two (10 classes; cpd.data.digit_pairs).
#
# Data: written by cpd.data.digit_pairs.write_mmpretrain_layout(data_root, n_train, n_val, seed).
# Train: python tools/train.py configs/embedded/resnet_digit_pairs.py --cfg-options data_root=PATH max_iters=N
#
# The top-level knobs `data_root`, `max_iters`, `warmup_iters` and `val_interval` are used in several places;
# `knobs` lists where each one goes, and tools/train.py (cpd.mm.train.expand_knobs) sets all of them from
# one `--cfg-options name=value`.
#
# Model: mmpretrain's CIFAR ResNet-18 (a 3x3 stem, no max pool) at a quarter of the width (base 16
# channels: 16-32-64-128), global average pooling and a linear head: 0.7M parameters, about 35 MFLOPs
# per 32x32 image. On a shared CPU set OMP_NUM_THREADS=1.
#
# Measured (1,000 training and 1,000 validation scenes, seed 0, batch 32, max_iters=1500, one thread on a
# busy 2-core machine, 0.18-0.33 s per iteration): top-1 84.3 / 85.2 / 84.4 % and top-5 98.2 / 99.0 /
# 99.0 % at iterations 500 / 1000 / 1500 (the training loss is near 0 by 600: few scenes, no augmentation).
# With 8,000 training scenes top-1 was 95.8 % at 500 iterations.

data_root = 'data/generated/digit_pairs'
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

custom_imports = dict(imports=['cpd.mm.dvclive_hook'], allow_failed_imports=False)
default_scope = 'mmpretrain'

num_classes = 10
# The deployment input size: the scenes are written at 32x32 and no transform resizes them, so the
# config says it (cpd's FLOPs, export and latency use it; mmpretrain ignores the key).
input_size = (32, 32)
data_preprocessor = dict(
    num_classes=num_classes,
    mean=[127.5, 127.5, 127.5],
    std=[127.5, 127.5, 127.5],
    to_rgb=True)
model = dict(
    type='ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

dataset_type = 'CustomDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
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
        save_best='accuracy/top1',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# dir=None: <work_dir>/dvclive.
custom_hooks = [dict(type='DVCLiveLoggerHook', interval=50, dir=None)]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
