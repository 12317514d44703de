# Prune the embedded detector (configs/embedded/retinanet_digit_boxes.py) with knowledge distillation from the
# unpruned model, during pruning (so the importance sees the KD gradient) and during the fine-tuning that follows.
#
#   python tools/train.py configs/embedded/retinanet_digit_boxes.py     # the teacher:
#                                           work_dirs/retinanet_digit_boxes/iter_2000.pth
#   python tools/train.py configs/embedded/retinanet_digit_boxes_kd.py
# The student starts from the teacher's weights; the PruningHook prunes the student only and writes
# thr_0.3.pth / thr_0.5.pth (the student alone, cut, loadable from the file; see cpd.mm.pruned), then cuts it
# and fine-tunes it to max_iters. No validation (no NMS with mmcv-lite): no best_pruned.pth.
# KD: binary KL at T=2 on every level's class scores, L2 on the box outputs of the priors the teacher scores
# at 0.5 or more (cpd.mm.detection_kd; docs/training.md). The neck term stays off: its 1x1 connectors would not
# follow the cut made in this run.
# Knobs as in the base config: data_root, max_iters, warmup_iters, checkpoint_interval.

_base_ = './retinanet_digit_boxes.py'

teacher_checkpoint = 'work_dirs/retinanet_digit_boxes/iter_2000.pth'
load_from = None
max_iters = 1000
warmup_iters = 20
checkpoint_interval = 250

custom_imports = dict(
    imports=['cpd.mm.dvclive_hook', 'cpd.mm.pruning_hook', 'cpd.mm.distiller'],
    allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='Distiller',
    student={{_base_.model}},
    teacher=None,  # the student's own config
    teacher_checkpoint=teacher_checkpoint,
    student_checkpoint=teacher_checkpoint,
    temperature=2.0,
    alpha=1.0,
    detection_kd=dict(cls='auto', box='masked_l2', box_weight=1.0, conf_thr=0.5, neck_weight=0.0))

# Fine-tuning a trained model: a lower peak learning rate, a short warm-up, cosine to zero.
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=checkpoint_interval))

custom_hooks = [
    dict(type='DVCLiveLoggerHook', interval=50, dir=None),
    dict(
        type='PruningHook',
        priority='LOWEST',
        interval=20,
        prune_cfg=None,
        save_sparsity_thr=[0.3, 0.5],
        continue_finetune=True,
        criterion='hessian',
        metric='params',
        round_to=4,
        step_fraction=0.05),
]
