"""The Lambda handlers' Powertools Tracer (X-Ray), apart from observability so that nothing else imports the X-Ray
SDK: the CLI and the engine never trace, and outside Lambda the SDK builds two botocore X-Ray clients when imported
(~0.1 s of CPU for every `eic-guard` command).

Only botocore is patched, so every AWS call is a subsegment. Powertools' default patches every module the SDK
supports, which imports requests, sqlite3 and the SDK's other patchers at every cold start (docs/architecture.md §6).
"""

from aws_lambda_powertools import Tracer

from .observability import SERVICE

TRACED_MODULES = ("botocore",)

tracer = Tracer(service=SERVICE, patch_modules=TRACED_MODULES)
