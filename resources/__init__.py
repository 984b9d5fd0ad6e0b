from resources.database import DatabaseResource as DatabaseResource
from resources.judge import JudgeResource as JudgeResource
from resources.judge import judge_resource_for as judge_resource_for
from resources.trainer import TrainerResource as TrainerResource
from resources.trainer import trainer_resource_for as trainer_resource_for
from resources.wandb import WandbResource as WandbResource
from resources.wandb import wandb_resource_for as wandb_resource_for
