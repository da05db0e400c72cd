"""The published weights tessera knows by name: one row per weight file.

Each model's first row is its default (``pretrained=True``). The accuracies are the ones the
source publishes: the official model zoos for the official releases, torchvision's weight
tables, timm's ``results-imagenet.csv`` for timm's hub weights, and the papers' tables for
the Hugging Face ports of CvT and PVT (whose model cards repeat them). Where an official
release is also on the hub (timm's and transformers' copies of the same weights), the copy
is a second source, tried when the first cannot be reached.

Swin V2's official releases are written as V1's: the official file first, timm's hub copy
second (and transformers' where it publishes one); torchvision's ``swin_v2_*`` weights are
entries of their own, as its V1 weights are.
"""

from __future__ import annotations

from .zoo import Pretrained, Source, VideoViews, register_pretrained

SWIN_RELEASES = "https://github.com/SwinTransformer/storage/releases/download/"
TORCHVISION = "https://download.pytorch.org/models/"
INCEPTION_MEAN = (0.5, 0.5, 0.5)

#: the official Video Swin test views: Kinetics 32 frames 2 apart, 4 clips x 3 crops;
#: Something-Something v2 32 frames, one from each of 32 segments, 1 clip x 3 crops
KINETICS_VIEWS = VideoViews(clip_len=32, frame_interval=2, num_clips=4, num_crops=3)
SSV2_VIEWS = VideoViews(clip_len=32, frame_interval=2, num_clips=1, num_crops=3, frame_uniform=True)
#: torchvision's swin3d evaluation: 12 clips of 32 frames at 15 fps (2 apart at 30 fps), centre crop
TORCHVISION_VIDEO_VIEWS = VideoViews(clip_len=32, frame_interval=2, num_clips=12, num_crops=1)


def _add(name: str, *sources: Source, license: str, label_set: str = "imagenet-1k", acc=(None, None),
         **kwargs) -> None:
    model, tag = name.split(".")
    register_pretrained(Pretrained(model, tag, tuple(sources), license, label_set, acc[0], acc[1], **kwargs))


# ---------------------------------------------------------------------------------------
# Official Swin V1 (microsoft/Swin-Transformer MODELHUB.md): {'model': ...} in the official
# names. Evaluated with a bicubic resize of the short side to 256 and a centre crop of 224
# (TEST.CROP), or a resize to 384 at 384. timm's hub holds the same weights (its layout).
# ---------------------------------------------------------------------------------------

def _swin(name: str, file: str, timm: str, acc=(None, None), img: int = 224, hf: str | None = None) -> None:
    in22k = file.endswith("_22k.pth")
    v2 = name.startswith("swinv2")
    sources = [Source("official", url=SWIN_RELEASES + file), Source("timm_swin", hub=f"timm/{timm}")]
    if hf:
        sources.append(Source("hf_swinv2" if v2 else "hf_swin", hub=hf))
    # the *_22k models are registered with the 22K head: only the others need num_classes
    needs_head = in22k and not name.split(".")[0].endswith("_22k")
    _add(name, *sources, license="MIT", acc=acc, label_set="imagenet-22k" if in22k else "imagenet-1k",
         args={"num_classes": 21841} if needs_head else {}, img_size=img, crop_pct=1.0 if img >= 384 else 0.875,
         notes="official release (microsoft/Swin-Transformer)")


_swin("swin_t.ms_in1k", "v1.0.0/swin_tiny_patch4_window7_224.pth", "swin_tiny_patch4_window7_224.ms_in1k",
      (81.2, 95.5), hf="microsoft/swin-tiny-patch4-window7-224")
_swin("swin_t.ms_in22k_ft_in1k", "v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth",
      "swin_tiny_patch4_window7_224.ms_in22k_ft_in1k", (80.9, 96.0))
_swin("swin_t.ms_in22k", "v1.0.8/swin_tiny_patch4_window7_224_22k.pth", "swin_tiny_patch4_window7_224.ms_in22k")
_swin("swin_s.ms_in22k_ft_in1k", "v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth",
      "swin_small_patch4_window7_224.ms_in22k_ft_in1k", (83.2, 97.0))
_swin("swin_s.ms_in1k", "v1.0.0/swin_small_patch4_window7_224.pth", "swin_small_patch4_window7_224.ms_in1k",
      (83.2, 96.2))
_swin("swin_s.ms_in22k", "v1.0.8/swin_small_patch4_window7_224_22k.pth", "swin_small_patch4_window7_224.ms_in22k")
_swin("swin_b.ms_in22k_ft_in1k", "v1.0.0/swin_base_patch4_window7_224_22kto1k.pth",
      "swin_base_patch4_window7_224.ms_in22k_ft_in1k", (85.2, 97.5))
_swin("swin_b.ms_in1k", "v1.0.0/swin_base_patch4_window7_224.pth", "swin_base_patch4_window7_224.ms_in1k",
      (83.5, 96.5))
_swin("swin_b.ms_in22k", "v1.0.0/swin_base_patch4_window7_224_22k.pth", "swin_base_patch4_window7_224.ms_in22k")
_swin("swin_b_384.ms_in22k_ft_in1k", "v1.0.0/swin_base_patch4_window12_384_22kto1k.pth",
      "swin_base_patch4_window12_384.ms_in22k_ft_in1k", (86.4, 98.0), img=384)
_swin("swin_b_384.ms_in1k", "v1.0.0/swin_base_patch4_window12_384.pth", "swin_base_patch4_window12_384.ms_in1k",
      (84.5, 97.0), img=384)
_swin("swin_b_384.ms_in22k", "v1.0.0/swin_base_patch4_window12_384_22k.pth",
      "swin_base_patch4_window12_384.ms_in22k", img=384)
_swin("swin_l.ms_in22k_ft_in1k", "v1.0.0/swin_large_patch4_window7_224_22kto1k.pth",
      "swin_large_patch4_window7_224.ms_in22k_ft_in1k", (86.3, 97.9))
_swin("swin_l.ms_in22k", "v1.0.0/swin_large_patch4_window7_224_22k.pth", "swin_large_patch4_window7_224.ms_in22k")
_swin("swin_l_384.ms_in22k_ft_in1k", "v1.0.0/swin_large_patch4_window12_384_22kto1k.pth",
      "swin_large_patch4_window12_384.ms_in22k_ft_in1k", (87.3, 98.2), img=384)
_swin("swin_l_384.ms_in22k", "v1.0.0/swin_large_patch4_window12_384_22k.pth",
      "swin_large_patch4_window12_384.ms_in22k", img=384)

# ---------------------------------------------------------------------------------------
# Official Swin V2 (the same MODELHUB.md), written as V1's: the official file, then timm's
# copy. TEST.CROP holds at 256 and 192 (short side to int(256 / 224 * size) = 292 / 219, a
# centre crop); the 384 fine-tunes set TEST.CROP False (configs/swinv2/*.yaml). The hub
# copies are second sources: timm's swinv2_tiny_window8_256.ms_in1k and
# swinv2_base_window12to24_192to384.ms_in22k_ft_in1k are the reference's own examples, timm's
# other Swin V2 repositories are those of its pretrained configurations (timm 1.0.31).
# ---------------------------------------------------------------------------------------

_swin("swinv2_t.ms_in1k", "v2.0.0/swinv2_tiny_patch4_window8_256.pth", "swinv2_tiny_window8_256.ms_in1k",
      (81.8, 95.9), img=256, hf="microsoft/swinv2-tiny-patch4-window8-256")
_swin("swinv2_s.ms_in1k", "v2.0.0/swinv2_small_patch4_window8_256.pth", "swinv2_small_window8_256.ms_in1k",
      (83.7, 96.6), img=256)
_swin("swinv2_b.ms_in1k", "v2.0.0/swinv2_base_patch4_window8_256.pth", "swinv2_base_window8_256.ms_in1k",
      (84.2, 96.9), img=256)
_swin("swinv2_t_w16.ms_in1k", "v2.0.0/swinv2_tiny_patch4_window16_256.pth", "swinv2_tiny_window16_256.ms_in1k",
      (82.8, 96.2), img=256)
_swin("swinv2_s_w16.ms_in1k", "v2.0.0/swinv2_small_patch4_window16_256.pth", "swinv2_small_window16_256.ms_in1k",
      (84.1, 96.8), img=256)
_swin("swinv2_b_w16.ms_in1k", "v2.0.0/swinv2_base_patch4_window16_256.pth", "swinv2_base_window16_256.ms_in1k",
      (84.6, 97.0), img=256)
_swin("swinv2_b_192_22k.ms_in22k", "v2.0.0/swinv2_base_patch4_window12_192_22k.pth",
      "swinv2_base_window12_192.ms_in22k", img=192)
_swin("swinv2_b_w12to16_256.ms_in22k_ft_in1k", "v2.0.0/swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth",
      "swinv2_base_window12to16_192to256.ms_in22k_ft_in1k", (86.2, 97.9), img=256)
_swin("swinv2_b_w12to24_384.ms_in22k_ft_in1k", "v2.0.0/swinv2_base_patch4_window12to24_192to384_22kto1k_ft.pth",
      "swinv2_base_window12to24_192to384.ms_in22k_ft_in1k", (87.1, 98.2), img=384)
_swin("swinv2_l_192_22k.ms_in22k", "v2.0.0/swinv2_large_patch4_window12_192_22k.pth",
      "swinv2_large_window12_192.ms_in22k", img=192)
_swin("swinv2_l_w12to16_256.ms_in22k_ft_in1k", "v2.0.0/swinv2_large_patch4_window12to16_192to256_22kto1k_ft.pth",
      "swinv2_large_window12to16_192to256.ms_in22k_ft_in1k", (86.9, 98.0), img=256)
_swin("swinv2_l_w12to24_384.ms_in22k_ft_in1k", "v2.0.0/swinv2_large_patch4_window12to24_192to384_22kto1k_ft.pth",
      "swinv2_large_window12to24_192to384.ms_in22k_ft_in1k", (87.6, 98.3), img=384)

# ---------------------------------------------------------------------------------------
# Official Video Swin (SwinTransformer/Video-Swin-Transformer README): mmaction2 layout.
# Frames resized on the short side with bilinear interpolation, as mmaction2's Resize.
# ---------------------------------------------------------------------------------------


def _video_swin(name: str, file: str, acc=(None, None), label_set: str = "kinetics-400", views=KINETICS_VIEWS,
                args=None) -> None:
    _add(name, Source("mmaction", url=SWIN_RELEASES + "v1.0.4/" + file), license="Apache-2.0", acc=acc,
         label_set=label_set, args=args or {}, interpolation="bilinear", video=views,
         notes="official release (SwinTransformer/Video-Swin-Transformer)")


_video_swin("video_swin_t.k400_1k", "swin_tiny_patch244_window877_kinetics400_1k.pth", (78.8, 93.6))
_video_swin("video_swin_s.k400_1k", "swin_small_patch244_window877_kinetics400_1k.pth", (80.6, 94.5))
_video_swin("video_swin_b.k400_22k", "swin_base_patch244_window877_kinetics400_22k.pth", (82.7, 95.5))
_video_swin("video_swin_b.k400_1k", "swin_base_patch244_window877_kinetics400_1k.pth", (80.6, 94.6))
_video_swin("video_swin_b.k600_22k", "swin_base_patch244_window877_kinetics600_22k.pth", (84.0, 96.5),
            label_set="kinetics-600", args={"num_classes": 600})
_video_swin("video_swin_b_ssv2.ssv2", "swin_base_patch244_window1677_sthv2.pth", (69.6, 92.7),
            label_set="something-something-v2", views=SSV2_VIEWS)
# the Kinetics-400 Video Swin-B with window (16, 7, 7) that the SSv2 model was fine-tuned from
_video_swin("video_swin_b_ssv2.k400_22k", "swin_base_patch244_window1677_kinetics400_22k.pth",
            args={"num_classes": 400})

# ---------------------------------------------------------------------------------------
# torchvision 0.28 weight tables (IMAGENET1K_V1, KINETICS400_V1, KINETICS400_IMAGENET22K_V1):
# plain state dicts in torchvision's names; the 8 hex digits of each file name start its SHA-256.
# torchvision's Swin V2 normalises the position coordinates by the window itself, which is
# the registered swinv2_t/s/b's pretrained_window_sizes=0.
# ---------------------------------------------------------------------------------------


def _torchvision(name: str, file: str, acc, resize: int, views=None, img: int = 224) -> None:
    fmt = "torchvision_swin3d" if views else "torchvision_swinv2" if file.startswith("swin_v2_") else "torchvision_swin"
    _add(name, Source(fmt, url=TORCHVISION + file, sha256=file.rsplit("-", 1)[1].split(".")[0]),
         license="BSD-3-Clause", acc=acc, label_set="kinetics-400" if views else "imagenet-1k",
         img_size=img, crop_pct=img / resize, interpolation="bilinear" if views else "bicubic", video=views,
         notes=f"torchvision weights (resize {resize}, crop {img})")


_torchvision("swin_t.tv_in1k", "swin_t-704ceda3.pth", (81.474, 95.776), 232)
_torchvision("swin_s.tv_in1k", "swin_s-5e29d889.pth", (83.196, 96.36), 246)
_torchvision("swin_b.tv_in1k", "swin_b-68c6b09e.pth", (83.582, 96.64), 238)
_torchvision("swinv2_t.tv_in1k", "swin_v2_t-b137f0e2.pth", (82.072, 96.132), 260, img=256)
_torchvision("swinv2_s.tv_in1k", "swin_v2_s-637d8ceb.pth", (83.712, 96.816), 260, img=256)
_torchvision("swinv2_b.tv_in1k", "swin_v2_b-781e5279.pth", (84.112, 96.864), 272, img=256)
_torchvision("video_swin_t.tv_k400_1k", "swin3d_t-7615ae03.pth", (77.715, 93.519), 256, TORCHVISION_VIDEO_VIEWS)
_torchvision("video_swin_s.tv_k400_1k", "swin3d_s-da41c237.pth", (79.521, 94.158), 256, TORCHVISION_VIDEO_VIEWS)
_torchvision("video_swin_b.tv_k400_1k", "swin3d_b_1k-24f7c7c6.pth", (79.427, 94.386), 256, TORCHVISION_VIDEO_VIEWS)
_torchvision("video_swin_b.tv_k400_22k", "swin3d_b_22k-7c6ae6fa.pth", (81.643, 95.574), 256, TORCHVISION_VIDEO_VIEWS)

# ---------------------------------------------------------------------------------------
# timm's hub weights (safetensors in timm's names, which are tessera's for these families);
# accuracies from timm's results-imagenet.csv
# ---------------------------------------------------------------------------------------


def _timm(name: str, hub: str, acc, crop_pct: float = 0.9, mean=None, std=None, copy: Source | None = None) -> None:
    extra = {"mean": mean, "std": std} if mean else {}
    _add(name, Source("tessera", hub=f"timm/{hub}"), *([copy] if copy else []), license="Apache-2.0", acc=acc,
         crop_pct=crop_pct, notes="timm's hub weights", **extra)


_timm("vit_b_16.augreg2_in21k_ft_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k", (85.108, 97.530),
      mean=INCEPTION_MEAN, std=INCEPTION_MEAN)
_timm("deit_t.fb_in1k", "deit_tiny_patch16_224.fb_in1k", (72.190, 91.100))
_timm("deit_s.fb_in1k", "deit_small_patch16_224.fb_in1k", (79.856, 95.056))
_timm("deit_b.fb_in1k", "deit_base_patch16_224.fb_in1k", (81.980, 95.740))
_timm("deit_t_distilled.fb_in1k", "deit_tiny_distilled_patch16_224.fb_in1k", (74.538, 91.898))
_timm("deit_s_distilled.fb_in1k", "deit_small_distilled_patch16_224.fb_in1k", (81.204, 95.378))
_timm("deit_b_distilled.fb_in1k", "deit_base_distilled_patch16_224.fb_in1k", (83.384, 96.492))
_timm("cait_xxs24.fb_dist_in1k", "cait_xxs24_224.fb_dist_in1k", (78.400, 94.326), crop_pct=1.0)
_timm("cait_s24.fb_dist_in1k", "cait_s24_224.fb_dist_in1k", (83.484, 96.586), crop_pct=1.0)
_timm("levit_128s.fb_dist_in1k", "levit_128s.fb_dist_in1k", (76.520, 92.870))
_timm("levit_256.fb_dist_in1k", "levit_256.fb_dist_in1k", (81.506, 95.466))
# the official PVT v2 weights, also in transformers' layout
_timm("pvt_v2_b0.in1k", "pvt_v2_b0.in1k", (70.654, 90.206), copy=Source("hf_pvt_v2", hub="OpenGVLab/pvt_v2_b0"))
_timm("pvt_v2_b2.in1k", "pvt_v2_b2.in1k", (82.062, 95.966), copy=Source("hf_pvt_v2", hub="OpenGVLab/pvt_v2_b2"))
_timm("pvt_v2_b2_li.in1k", "pvt_v2_b2_li.in1k", (82.200, 96.108),
      copy=Source("hf_pvt_v2", hub="OpenGVLab/pvt_v2_b2_linear"))

# ---------------------------------------------------------------------------------------
# Hugging Face transformers ports: CvT (microsoft/cvt-*, run with exact GELU as transformers
# does) and PVT v1 (Zetatech/pvt-*, every LayerNorm with eps 1e-6 as transformers does).
# Accuracies from the official repositories' tables (microsoft/CvT, whai362/PVT).
# ---------------------------------------------------------------------------------------


def _hf(name: str, fmt: str, hub: str, acc, license: str, args: dict, img: int = 224) -> None:
    _add(name, Source(fmt, hub=hub), license=license, acc=acc, args=args, img_size=img,
         crop_pct=0.875 if img == 224 else 1.0, notes="Hugging Face transformers port")


_CVT_HF = {"act_layer": "gelu"}
_PVT_HF = {"norm_eps": 1e-6, "embed_norm_eps": 1e-6}
_hf("cvt_13.ms_in1k", "hf_cvt", "microsoft/cvt-13", (81.6, None), "MIT", _CVT_HF)
_hf("cvt_13.ms_in1k_384", "hf_cvt", "microsoft/cvt-13-384", (83.0, None), "MIT", {**_CVT_HF, "img_size": 384}, 384)
_hf("cvt_21.ms_in1k", "hf_cvt", "microsoft/cvt-21", (82.5, None), "MIT", _CVT_HF)
_hf("pvt_tiny.in1k", "hf_pvt", "Zetatech/pvt-tiny-224", (75.1, None), "Apache-2.0", _PVT_HF)
_hf("pvt_small.in1k", "hf_pvt", "Zetatech/pvt-small-224", (79.8, None), "Apache-2.0", _PVT_HF)
_hf("pvt_medium.in1k", "hf_pvt", "Zetatech/pvt-medium-224", (81.2, None), "Apache-2.0", _PVT_HF)
_hf("pvt_large.in1k", "hf_pvt", "Zetatech/pvt-large-224", (81.7, None), "Apache-2.0", _PVT_HF)
