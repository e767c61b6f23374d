"""Tasks: LightningModules composed from registry names (``TASK``), and their DataModules (``DATA``).

A task's ``__init__`` takes primitives only — component names plus kwargs dicts — and calls
``save_hyperparameters()``, so the Hydra front end (``tools/train.py``), LightningCLI (``tools/cli.py``) and
``load_from_checkpoint`` build it the same way.

============= =========================================================================================
name          task
============= =========================================================================================
``vision``    image classification with any backbone and channel attention (:class:`VisionTask`)
``lm``        causal language modelling with the hybrid MoE LM on packed documents (:class:`LMTask`)
``detection`` object detection / instance segmentation with torchvision's detectors (:class:`DetectionTask`)
``rl``        RL with verifiable rewards: rollouts, advantages, PPO / GRPO / DAPO / CISPO updates (:class:`RLTask`)
``vlm``       vision-language: MiniMax-VL-01's ViT–MLP–LLM on LLaVA-format conversations, align / instruct
              stages, exact-match VQA scoring (:class:`VLMTask`)
============= =========================================================================================
"""

from tasks.base import BaseTask
from tasks.detection import DetectionTask
from tasks.lm import LMTask
from tasks.rl import RLTask
from tasks.vision import VisionTask
from tasks.vlm import VLMTask

__all__ = ["BaseTask", "DetectionTask", "LMTask", "RLTask", "VLMTask", "VisionTask"]
