"""`invoke image.verify`: is the local image the one lock.yaml pins, and does a rebuild give it again?

The local image (the engine's `moebench/<name>:local`) is compared by image ID and layer
diff_ids with `images.<name>` in the lock. With `rebuild`, the image is built again from its
recipe first, so the answer is about the recipe, not about what happens to be loaded; a
difference names each layer that differs (its position, both digests, what made it).
"""

from __future__ import annotations

from moebench.config import Config
from moebench.errors import IntegrityError, UserError
from moebench.images import engine
from moebench.images.builder import build_image, image_spec, recipe_sha256


def pinned_id(cfg: Config, name: str) -> str:
    """The image ID lock.yaml pins for `name`; UserError when no build of it was recorded."""
    pinned = image_spec(cfg, name).id
    if pinned is None:
        raise UserError(cfg.root / "lock.yaml", f"images.{name} has no recorded id",
                        f"run: invoke image.build --image {name} && invoke image.lock --image {name}",
                        key=f"images.{name}.id")
    return pinned


def refuse_unless_pinned(name: str, local_id: str, pinned: str) -> None:
    """IntegrityError naming both IDs when the local image is not the one the lock pins."""
    if local_id != pinned:
        raise IntegrityError(engine.local_tag(name), f"image ID is {local_id}, lock.yaml pins {pinned}",
                             f"rebuild it from the lock (invoke image.verify --image {name} --rebuild); if the "
                             f"recipe changed on purpose, re-pin with invoke image.lock --image {name}",
                             key=f"images.{name}.id")


def verify_image(cfg: Config, name: str, rebuild: bool = False) -> list[str]:
    """Lines describing the comparison; IntegrityError (naming both digests) when the image differs."""
    spec, pinned = image_spec(cfg, name), pinned_id(cfg, name)
    lines = []
    if rebuild:
        result = build_image(cfg, name)
        lines.append(f"rebuilt {name} in {sum(result.seconds.values()):.1f} s: {result.id}")
    image = engine.image_by_tag(engine.connect(), name)
    local_layers = list(image.attrs["RootFS"]["Layers"])
    lines += [f"{'':<8} {'lock':<71}  local", f"{'id':<8} {pinned:<71}  {image.id}"]
    for index in range(max(len(local_layers), len(spec.layers))):
        locked = spec.layers[index] if index < len(spec.layers) else "-"
        local = local_layers[index] if index < len(local_layers) else "-"
        lines.append(f"{f'layer {index}':<8} {locked:<71}  {local}{'' if locked == local else '  DIFFERENT'}")
    current_recipe = recipe_sha256(cfg, name, spec)
    if spec.recipe_sha256 != current_recipe:
        lines.append(f"note: the recipe changed since the lock's build (recipe_sha256 {spec.recipe_sha256} -> "
                     f"{current_recipe}); only --rebuild says whether the image did")
    if image.id != pinned:
        print("\n".join(lines))
    refuse_unless_pinned(name, image.id, pinned)
    lines.append(f"IDENTICAL: {engine.local_tag(name)} is images.{name} of lock.yaml")
    return lines
