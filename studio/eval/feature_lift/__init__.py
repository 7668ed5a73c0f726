"""The ``studio eval feature-lift`` protocol: 3D awareness of frozen 2D features (Probe3D-style).

After "Probing the 3D Awareness of Visual Foundation Models" (El Banani et al., CVPR 2024): a
feature model is frozen, small probes are trained on its dense features of the scenes' *train*
views and scored on the *test* views; multi-view correspondence needs no training. Every model is
measured with the same :class:`ProbeSettings` (the constants of :mod:`.settings`), so numbers of
two models (teacher vs student) compare.

Data: NeRF-synthetic scene folders (or folders of them) whose train and test splits carry
``depth_XXXX.exr`` (view-space z, 0 or >= 1e6 off-object) and ``normal_XXXX.exr`` (world-space
unit normals) beside ``r_XXX.png``, and optionally ``id_XXXX.png`` (16-bit ids, 0 = background):
what ToyWorld (``studio scenes make``) and ``shared/tools/blender_scene.py`` write. Everything is
resampled to the evaluation resolution (longer side ``EVAL_RESOLUTION``): images bilinearly with
antialiasing and composited over white, ground-truth maps by nearest neighbour; the intrinsics
scale with them. Camera-to-world matrices are NeRF-synthetic's (OpenGL axes); pixel (row i,
col j) is centred at (j+0.5, i+0.5) (DESIGN.md "Core interfaces").

Metrics (``evaluate_feature_lift``; image metrics are the mean over test views of per-view values):

* ``depth_rmse`` / ``depth_delta1``: the depth probe's prediction, scaled per image by the
  least-squares scale ``s = sum(p g) / sum(p p)`` over the object pixels, then RMSE (scene units)
  and the fraction of object pixels with ``max(p/g, g/p) < 1.25``.
* ``normal_rmse_deg`` / ``normal_recall_{11,22,30}``: angle between the normal probe's unit normal
  and the true normal in the camera frame (OpenCV axes); per-image RMSE and fraction below
  11.25 / 22.5 / 30 degrees.
* ``corr_recall_{5,10,20}px``: for every ordered pair (A, B) of test views of a scene, up to
  ``CORR_POINTS`` object pixels of A that are visible in B (unprojected with A's depth, projected
  into B, kept when B's depth at that pixel agrees within ``CORR_OCCLUSION_TOL``) are matched to
  the object pixel of B whose bilinearly sampled feature has the highest cosine similarity; recall
  is the fraction of matches within 5/10/20 px of the true projection (evaluation resolution),
  pooled over points. ``corr_recall_10px_by_angle`` bins the 10 px recall by the angle between
  the two viewing rays of the point (``CORR_ANGLE_BINS``); empty bins are None.
* ``seg_miou``: per scene with id maps, a linear probe to the scene's train ids (background
  included as a class), mean IoU over the classes present in its test views (ids unseen in
  training are ignored); mean over those scenes; None without id maps.

Plus ``corr_recall_10px_by_angle``, ``n_scenes``, ``n_test_views`` and ``settings`` (the
:class:`ProbeSettings` used).

Feature models follow ``studio.features.FeatureModel``: ``prepare(images)`` resizes [B,3,H,W] in
[0,1] to a size ``forward`` accepts, ``forward`` returns [B,D,H/p,W/p]. Any object with that
interface works here (this package does not import ``studio.features``).

Layout: :mod:`.settings` (constants, ``METRIC_KEYS``, :class:`ProbeSettings`), :mod:`.data` (scene
discovery, AOV checks, loading splits), :mod:`.geometry` (camera normals, unproject/project,
visibility, feature sampling), :mod:`.metrics`, :mod:`.probes` (feature extraction, probe networks,
losses, :func:`fit_probe`) and :mod:`.protocol` (:func:`evaluate_feature_lift` and its per-task
drivers); everything public is re-exported here.
"""

from studio.eval.feature_lift.data import (
    Scene,
    SplitViews,
    aov_path,
    check_scene_aovs,
    eval_size,
    find_scenes,
    load_scene,
    load_split,
)
from studio.eval.feature_lift.geometry import (
    camera_normals,
    pixel_centres,
    project,
    sample_features,
    unproject,
    visible_in,
)
from studio.eval.feature_lift.metrics import (
    align_depth_scale,
    angular_error_deg,
    correspondence_metrics,
    depth_metrics,
    mean_iou,
    normal_metrics,
)
from studio.eval.feature_lift.probes import (
    DenseProbe,
    LinearProbe,
    ResidualConvUnit,
    angular_loss,
    extract_features,
    fit_probe,
    silog_loss,
)
from studio.eval.feature_lift.protocol import (
    correspondence_errors,
    depth_normal_probes,
    evaluate_feature_lift,
    segmentation_miou,
)
from studio.eval.feature_lift.settings import (
    BACKGROUND_DEPTH,
    CORR_ANGLE_BINS,
    CORR_OCCLUSION_TOL,
    CORR_POINTS,
    CORR_THRESHOLDS_PX,
    DEPTH_DELTA,
    DEPTH_SILOG_LAMBDA,
    EVAL_RESOLUTION,
    FEATURE_BATCH,
    METRIC_KEYS,
    NORMAL_THRESHOLDS_DEG,
    PROBE_BATCH,
    PROBE_HIDDEN,
    PROBE_LR,
    PROBE_SEED,
    PROBE_STEPS,
    PROBE_WEIGHT_DECAY,
    ProbeSettings,
)

__all__ = [
    "Scene",
    "SplitViews",
    "aov_path",
    "check_scene_aovs",
    "eval_size",
    "find_scenes",
    "load_scene",
    "load_split",
    "camera_normals",
    "pixel_centres",
    "project",
    "sample_features",
    "unproject",
    "visible_in",
    "align_depth_scale",
    "angular_error_deg",
    "correspondence_metrics",
    "depth_metrics",
    "mean_iou",
    "normal_metrics",
    "DenseProbe",
    "LinearProbe",
    "ResidualConvUnit",
    "angular_loss",
    "extract_features",
    "fit_probe",
    "silog_loss",
    "correspondence_errors",
    "depth_normal_probes",
    "evaluate_feature_lift",
    "segmentation_miou",
    "BACKGROUND_DEPTH",
    "CORR_ANGLE_BINS",
    "CORR_OCCLUSION_TOL",
    "CORR_POINTS",
    "CORR_THRESHOLDS_PX",
    "DEPTH_DELTA",
    "DEPTH_SILOG_LAMBDA",
    "EVAL_RESOLUTION",
    "FEATURE_BATCH",
    "METRIC_KEYS",
    "NORMAL_THRESHOLDS_DEG",
    "PROBE_BATCH",
    "PROBE_HIDDEN",
    "PROBE_LR",
    "PROBE_SEED",
    "PROBE_STEPS",
    "PROBE_WEIGHT_DECAY",
    "ProbeSettings",
]
