# Prune the embedded default with knowledge distillation from the unpruned model, during pruning (so the
# importance sees the KD gradient) and during the fine-tuning that follows.
#
#   python tools/train.py configs/embedded/vit_digits.py          # the teacher: work_dirs/vit_digits/iter_2000.pth
#   python tools/train.py configs/embedded/vit_digits_kd.py
# The student starts from the teacher's weights (student_checkpoint; load_from would look for `student.` keys);
# the PruningHook prunes the student only, and thr_*.pth / best_pruned.pth hold the student alone.

_base_ = './vit_digits_prune.py'

teacher_checkpoint = 'work_dirs/vit_digits/iter_2000.pth'
load_from = None

custom_imports = dict(
    imports=['cpd.mm.digits', 'cpd.mm.heads', 'cpd.mm.dvclive_hook', 'cpd.mm.pruning_hook', 'cpd.mm.distiller'],
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
    feature_loss=None)
