"""``ns-train sds``: text-to-3D by score distillation (DreamFusion SDS, ProlificDreamer VSD)."""
