# The embedded detection config: a small RetinaNet finding the digits of a 64x64 digit mosaic scene,
# one box per digit, 10 classes (cpd.data.digit_boxes; COCO json read by mmdet's CocoDataset).
#
# Data: written by cpd.data.digit_boxes.write_coco_layout(data_root, n_train, n_val, seed).
# Train: python tools/train.py configs/embedded/retinanet_digit_boxes.py --cfg-options data_root=PATH max_iters=N
#
# Model: mmdet's ResNet-18 at a quarter of the width (base 16 channels), its first three stages
# (16-32-64 channels, strides 4, 8, 16) into a 32-channel FPN and a RetinaNet head of two 32-channel
# convolutions per branch: 0.26M parameters. Digits are 6-16 px, so the anchors start at 8 px on the stride-4 level
# (octave_base_scale=2): three scales and one aspect ratio per location.
#
# Measured (one thread on a busy 2-core machine): 100 iterations of batch 16 in 10 s (loss 1.75 -> 0.59
# on 64 scenes); 600 iterations on 512 scenes in 79 s, loss 0.13, and the model then scores 7% of the
# stride-4 anchors of validation scenes at 0.5 or more (none on the stride-16 level: digits are small).
#
# No validation: inference decodes the boxes and runs NMS, a compiled mmcv op that mmcv-lite lacks.
# Training, the PruningHook and the Distiller need only the head's raw outputs and its losses.
# On a shared CPU set OMP_NUM_THREADS=1.

data_root = 'data/generated/digit_boxes'
max_iters = 2000
warmup_iters = 100
checkpoint_interval = 500
knobs = dict(
    data_root=['train_dataloader.dataset.data_root'],
    max_iters=['train_cfg.max_iters', 'param_scheduler.1.end'],
    warmup_iters=['param_scheduler.0.end', 'param_scheduler.1.begin'],
    checkpoint_interval=['default_hooks.checkpoint.interval'],
)

custom_imports = dict(imports=['cpd.mm.dvclive_hook'], allow_failed_imports=False)
default_scope = 'mmdet'

classes = tuple(str(k) for k in range(10))
size = 64
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_size_divisor=16,
        # every scene is 64x64 already: the fixed pad only tells cpd the input size
        batch_augments=[dict(type='BatchFixedSizePad', size=(size, size))]),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        stage_with_dcn=(False, False, False),
        out_indices=(0, 1, 2),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch'),
    neck=dict(type='FPN', in_channels=[16, 32, 64], out_channels=32, num_outs=3),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=len(classes),
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=2,
            scales_per_octave=3,
            ratios=[1.0],
            strides=[4, 8, 16]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=20))

dataset_type = 'CocoDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=checkpoint_interval, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# dir=None: <work_dir>/dvclive.
custom_hooks = [dict(type='DVCLiveLoggerHook', interval=50, dir=None)]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
