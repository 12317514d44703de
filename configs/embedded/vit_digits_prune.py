# Prune the embedded default (configs/embedded/vit_digits.py) while fine-tuning it, then fine-tune the cut model.
#
# Start from a trained model:
#   python tools/train.py configs/embedded/vit_digits.py                      # work_dirs/vit_digits/iter_2000.pth
#   python tools/train.py configs/embedded/vit_digits_prune.py
# The PruningHook combs the model when training starts (prune_cfg=None; `cpd comb configs/embedded/vit_digits.py
# --out deps.json` and prune_cfg='deps.json' do the same from a file), removes 5 points of parameter sparsity
# every 20 iterations, writes thr_0.3.pth and thr_0.5.pth (cut model + plan, see cpd.mm.pruned) to the work dir,
# then cuts the model and fine-tunes it until max_iters, keeping best_pruned.pth by validation mIoU.
# Knobs as in the base config: data_root, max_iters, warmup_iters, val_interval (tools/train.py --cfg-options).

_base_ = './vit_digits.py'

load_from = 'work_dirs/vit_digits/iter_2000.pth'
max_iters = 1000
warmup_iters = 20
val_interval = 250

custom_imports = dict(
    imports=['cpd.mm.digits', 'cpd.mm.heads', 'cpd.mm.dvclive_hook', 'cpd.mm.pruning_hook'],
    allow_failed_imports=False)

# Fine-tuning a trained model: a lower peak learning rate, a short warm-up, cosine to zero.
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))

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
        round_to=8,
        step_fraction=0.05),
]
