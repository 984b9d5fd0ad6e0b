-- The game's own tables that this platform reads (and, with BABYLON_PUBLISH=1, writes), exactly as the
-- game's Prisma schema creates them (../shared/reference/game-database.md): camelCase quoted columns,
-- TEXT ids, TIMESTAMP(3) without time zone holding UTC, steps as JSON text.
-- `babylon simulate` runs this when the tables are absent, standing in for the game; the tests create
-- their game databases from it. It is never run against a database that already has the game's tables.

CREATE TABLE IF NOT EXISTS "trajectories" (
    "id" TEXT NOT NULL,
    "trajectoryId" TEXT NOT NULL,
    "agentId" TEXT NOT NULL,
    "startTime" TIMESTAMP(3) NOT NULL,
    "endTime" TIMESTAMP(3) NOT NULL,
    "durationMs" INTEGER NOT NULL,
    "windowId" VARCHAR(50),
    "windowHours" INTEGER NOT NULL DEFAULT 1,
    "episodeId" VARCHAR(100),
    "scenarioId" VARCHAR(100),
    "batchId" VARCHAR(100),
    "stepsJson" TEXT NOT NULL,
    "rewardComponentsJson" TEXT NOT NULL,
    "metricsJson" TEXT NOT NULL,
    "metadataJson" TEXT NOT NULL,
    "totalReward" DOUBLE PRECISION NOT NULL,
    "episodeLength" INTEGER NOT NULL,
    "finalStatus" TEXT NOT NULL,
    "finalBalance" DOUBLE PRECISION,
    "finalPnL" DOUBLE PRECISION,
    "tradesExecuted" INTEGER,
    "postsCreated" INTEGER,
    "aiJudgeReward" DOUBLE PRECISION,
    "aiJudgeReasoning" TEXT,
    "judgedAt" TIMESTAMP(3),
    "isTrainingData" BOOLEAN NOT NULL DEFAULT true,
    "isEvaluation" BOOLEAN NOT NULL DEFAULT false,
    "usedInTraining" BOOLEAN NOT NULL DEFAULT false,
    "trainedInBatch" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "trajectories_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX IF NOT EXISTS "trajectories_trajectoryId_key" ON "trajectories"("trajectoryId");
CREATE INDEX IF NOT EXISTS "trajectories_agentId_startTime_idx" ON "trajectories"("agentId", "startTime");
CREATE INDEX IF NOT EXISTS "trajectories_aiJudgeReward_idx" ON "trajectories"("aiJudgeReward");
CREATE INDEX IF NOT EXISTS "trajectories_isTrainingData_usedInTraining_idx"
    ON "trajectories"("isTrainingData", "usedInTraining");
CREATE INDEX IF NOT EXISTS "trajectories_scenarioId_createdAt_idx" ON "trajectories"("scenarioId", "createdAt");
CREATE INDEX IF NOT EXISTS "trajectories_trainedInBatch_idx" ON "trajectories"("trainedInBatch");
CREATE INDEX IF NOT EXISTS "trajectories_windowId_agentId_idx" ON "trajectories"("windowId", "agentId");
CREATE INDEX IF NOT EXISTS "trajectories_windowId_idx" ON "trajectories"("windowId");

CREATE TABLE IF NOT EXISTS "llm_call_logs" (
    "id" TEXT NOT NULL,
    "trajectoryId" TEXT NOT NULL,
    "stepId" TEXT NOT NULL,
    "callId" TEXT NOT NULL,
    "timestamp" TIMESTAMP(3) NOT NULL,
    "latencyMs" INTEGER,
    "model" TEXT NOT NULL,
    "purpose" TEXT NOT NULL,
    "actionType" TEXT,
    "systemPrompt" TEXT NOT NULL,
    "userPrompt" TEXT NOT NULL,
    "messagesJson" TEXT NOT NULL,
    "response" TEXT NOT NULL,
    "reasoning" TEXT,
    "temperature" DOUBLE PRECISION NOT NULL,
    "maxTokens" INTEGER NOT NULL,
    "topP" DOUBLE PRECISION,
    "promptTokens" INTEGER,
    "completionTokens" INTEGER,
    "totalTokens" INTEGER,
    "metadata" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "llm_call_logs_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX IF NOT EXISTS "llm_call_logs_callId_key" ON "llm_call_logs"("callId");

CREATE TABLE IF NOT EXISTS "market_outcomes" (
    "id" TEXT NOT NULL,
    "windowId" VARCHAR(50) NOT NULL,
    "stockTicker" VARCHAR(20),
    "startPrice" DECIMAL(10,2),
    "endPrice" DECIMAL(10,2),
    "changePercent" DECIMAL(5,2),
    "sentiment" VARCHAR(20),
    "newsEvents" JSONB,
    "predictionMarketId" TEXT,
    "question" TEXT,
    "outcome" VARCHAR(20),
    "finalProbability" DECIMAL(5,4),
    "volume" DECIMAL(15,2),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "market_outcomes_pkey" PRIMARY KEY ("id")
);
CREATE INDEX IF NOT EXISTS "market_outcomes_windowId_idx" ON "market_outcomes"("windowId");
CREATE INDEX IF NOT EXISTS "market_outcomes_windowId_stockTicker_idx" ON "market_outcomes"("windowId", "stockTicker");

CREATE TABLE IF NOT EXISTS "Organization" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "initialPrice" DOUBLE PRECISION,
    "currentPrice" DOUBLE PRECISION,
    CONSTRAINT "Organization_pkey" PRIMARY KEY ("id")
);

CREATE TABLE IF NOT EXISTS "StockPrice" (
    "id" TEXT NOT NULL,
    "organizationId" TEXT NOT NULL,
    "price" DOUBLE PRECISION NOT NULL,
    "change" DOUBLE PRECISION NOT NULL,
    "changePercent" DOUBLE PRECISION NOT NULL,
    "timestamp" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "isSnapshot" BOOLEAN NOT NULL DEFAULT false,
    "openPrice" DOUBLE PRECISION,
    "highPrice" DOUBLE PRECISION,
    "lowPrice" DOUBLE PRECISION,
    "volume" DOUBLE PRECISION,
    CONSTRAINT "StockPrice_pkey" PRIMARY KEY ("id")
);
CREATE INDEX IF NOT EXISTS "StockPrice_organizationId_timestamp_idx" ON "StockPrice"("organizationId", "timestamp" DESC);

CREATE TABLE IF NOT EXISTS "Market" (
    "id" TEXT NOT NULL,
    "question" TEXT NOT NULL,
    "yesShares" DECIMAL(18,6) NOT NULL DEFAULT 0,
    "noShares" DECIMAL(18,6) NOT NULL DEFAULT 0,
    "liquidity" DECIMAL(18,6) NOT NULL,
    "resolved" BOOLEAN NOT NULL DEFAULT false,
    "resolution" BOOLEAN,
    "endDate" TIMESTAMP(3) NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "Market_pkey" PRIMARY KEY ("id")
);

CREATE TABLE IF NOT EXISTS "PredictionPriceHistory" (
    "id" TEXT NOT NULL,
    "marketId" TEXT NOT NULL,
    "yesPrice" DOUBLE PRECISION NOT NULL,
    "noPrice" DOUBLE PRECISION NOT NULL,
    "yesShares" DECIMAL(18,6) NOT NULL,
    "noShares" DECIMAL(18,6) NOT NULL,
    "liquidity" DECIMAL(18,6) NOT NULL,
    "eventType" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "PredictionPriceHistory_pkey" PRIMARY KEY ("id")
);
CREATE INDEX IF NOT EXISTS "PredictionPriceHistory_marketId_createdAt_idx"
    ON "PredictionPriceHistory"("marketId", "createdAt" DESC);

CREATE TABLE IF NOT EXISTS "Question" (
    "id" TEXT NOT NULL,
    "questionNumber" INTEGER NOT NULL,
    "text" TEXT NOT NULL,
    "outcome" BOOLEAN NOT NULL,
    "resolvedOutcome" BOOLEAN,
    "resolutionDate" TIMESTAMP(3) NOT NULL,
    "status" TEXT NOT NULL,
    CONSTRAINT "Question_pkey" PRIMARY KEY ("id")
);

CREATE TABLE IF NOT EXISTS "trained_models" (
    "id" TEXT NOT NULL,
    "modelId" TEXT NOT NULL,
    "version" TEXT NOT NULL,
    "baseModel" TEXT NOT NULL,
    "trainingBatch" TEXT,
    "status" TEXT NOT NULL DEFAULT 'training',
    "deployedAt" TIMESTAMP(3),
    "archivedAt" TIMESTAMP(3),
    "storagePath" TEXT NOT NULL,
    "benchmarkScore" DOUBLE PRECISION,
    "accuracy" DOUBLE PRECISION,
    "avgReward" DOUBLE PRECISION,
    "evalMetrics" JSONB,
    "wandbRunId" TEXT,
    "wandbArtifactId" TEXT,
    "agentsUsing" INTEGER NOT NULL DEFAULT 0,
    "totalInferences" INTEGER NOT NULL DEFAULT 0,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "trained_models_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX IF NOT EXISTS "trained_models_modelId_key" ON "trained_models"("modelId");

CREATE TABLE IF NOT EXISTS "training_batches" (
    "id" TEXT NOT NULL,
    "batchId" TEXT NOT NULL,
    "scenarioId" TEXT,
    "baseModel" TEXT NOT NULL,
    "modelVersion" TEXT NOT NULL,
    "trajectoryIds" TEXT NOT NULL,
    "rankingsJson" TEXT,
    "rewardsJson" TEXT,
    "trainingLoss" DOUBLE PRECISION,
    "policyImprovement" DOUBLE PRECISION,
    "status" TEXT NOT NULL DEFAULT 'pending',
    "error" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" TIMESTAMP(3),
    "completedAt" TIMESTAMP(3),
    CONSTRAINT "training_batches_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX IF NOT EXISTS "training_batches_batchId_key" ON "training_batches"("batchId");
