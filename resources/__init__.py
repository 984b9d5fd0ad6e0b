from resources.database import DatabaseResource as DatabaseResource
from resources.judge import JudgeResource as JudgeResource
from resources.judge import judge_resource_for as judge_resource_for
