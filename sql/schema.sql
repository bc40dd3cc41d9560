-- osteo-batch store schema. Every statement is idempotent: the store is
-- created on first use and upgraded in place by later versions.

-- One row per nightly run (or sweep-only run). summary holds the counts shown
-- on the run summary page; it never holds patient data.
CREATE TABLE IF NOT EXISTS runs (
    run_id       VARCHAR PRIMARY KEY,
    kind         VARCHAR NOT NULL,          -- 'nightly' or 'sweep'
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    run_date     DATE NOT NULL,
    archive      VARCHAR,
    model_id     VARCHAR,
    threshold    DOUBLE,
    status       VARCHAR NOT NULL,          -- 'running', 'finished', 'failed', 'ended_abnormally' (killed)
    summary      JSON
);

-- The header index: one row per regular file under the archive, whatever it
-- is. status/reason are derived (sql/resolve_status.sql) from what the sweep
-- (read_reason, eligibility_reason) and scoring (decode_reason) recorded.
CREATE TABLE IF NOT EXISTS instances (
    path                VARCHAR PRIMARY KEY,
    size                BIGINT NOT NULL,
    mtime_ns            BIGINT NOT NULL,
    sop_instance_uid    VARCHAR,
    sop_class_uid       VARCHAR,
    study_instance_uid  VARCHAR,
    series_instance_uid VARCHAR,
    transfer_syntax_uid VARCHAR,
    patient_id          VARCHAR,
    patient_name        VARCHAR,
    sex                 VARCHAR,
    birth_date          DATE,
    age                 DOUBLE,             -- years at the study
    study_date          DATE,
    accession_number    VARCHAR,
    modality            VARCHAR,
    view                VARCHAR,            -- ViewPosition
    body_part           VARCHAR,
    institution_name    VARCHAR,
    manufacturer        VARCHAR,
    photometric         VARCHAR,
    rows                INTEGER,
    columns             INTEGER,
    bits_stored         INTEGER,
    header              JSON,               -- selected keywords, for re-evaluating rules
    read_reason         VARCHAR,            -- set when the header read rejected the file
    read_detail         VARCHAR,
    eligibility_reason  VARCHAR,            -- 'ineligible:<condition>' or NULL
    rules_digest        VARCHAR,            -- digest of the rules that set eligibility_reason
    decode_reason       VARCHAR,            -- set when pixel decoding failed
    status              VARCHAR NOT NULL DEFAULT 'pending'
        CHECK (status IN ('scored', 'ineligible', 'duplicate', 'rejected', 'pending')),
    reason              VARCHAR,
    swept_run_id        VARCHAR,
    CHECK (status = 'scored' OR reason IS NOT NULL)
);
-- Values in the file's header that break their VR's rules (plus File Meta/data set
-- mismatches): of two copies of one SOP Instance UID, the intact one is kept.
ALTER TABLE instances ADD COLUMN IF NOT EXISTS header_issues INTEGER;

-- Risk scores: P(osteoporosis) from one model for one image. model_id is the
-- model's content hash, so every score traces back to exact weights.
CREATE TABLE IF NOT EXISTS scores (
    sop_instance_uid VARCHAR NOT NULL,
    patient_id       VARCHAR,
    model_id         VARCHAR NOT NULL,
    score            DOUBLE NOT NULL,
    run_id           VARCHAR NOT NULL,
    scored_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (sop_instance_uid, model_id)
);

-- Grad-CAM overlays of flagged images; heatmap is a file name under
-- <workdir>/heatmaps, a hash that carries no patient data.
CREATE TABLE IF NOT EXISTS explanations (
    sop_instance_uid VARCHAR NOT NULL,
    model_id         VARCHAR NOT NULL,
    heatmap          VARCHAR NOT NULL,
    run_id           VARCHAR NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (sop_instance_uid, model_id)
);

-- DXA results as users bring them (dxa.csv). Loading is idempotent per
-- (patient_id, exam_date); later runs keep what earlier runs loaded.
CREATE TABLE IF NOT EXISTS dxa (
    patient_id     VARCHAR NOT NULL,
    exam_date      DATE NOT NULL,
    t_lumbar_spine DOUBLE,
    t_femoral_neck DOUBLE,
    t_total_hip    DOUBLE,
    source         VARCHAR,                 -- hash of the file it came from
    loaded_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (patient_id, exam_date)
);

-- DXA rows that could not be loaded, with the reason: nothing is dropped silently.
CREATE TABLE IF NOT EXISTS dxa_rejected (
    source    VARCHAR NOT NULL,
    line      INTEGER NOT NULL,
    reason    VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL
);

-- Worklists written, one per run.
CREATE TABLE IF NOT EXISTS worklists (
    run_id     VARCHAR NOT NULL,
    file       VARCHAR NOT NULL,
    model_id   VARCHAR NOT NULL,
    threshold  DOUBLE NOT NULL,
    n_patients INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);


-- Shard Parquet files already loaded into scores, so a file written by a run
-- that could not load it (the store was held, the process was killed) is
-- loaded by the next run instead of being scored again.
CREATE TABLE IF NOT EXISTS shard_files (
    file      VARCHAR PRIMARY KEY,
    loaded_at TIMESTAMP NOT NULL
);

-- What coordinators did, one row per action, never updated or deleted
-- (osteo-batch refer). event_id makes a queued action load exactly once.
CREATE TABLE IF NOT EXISTS referrals (
    event_id    VARCHAR PRIMARY KEY,
    patient_id  VARCHAR NOT NULL,
    status      VARCHAR NOT NULL
        CHECK (status IN ('contacted', 'referred', 'declined', 'unreachable', 'dxa-done')),
    note        VARCHAR,
    by_user     VARCHAR NOT NULL,
    acted_at    TIMESTAMP NOT NULL,          -- when the coordinator acted (also when queued)
    recorded_at TIMESTAMP NOT NULL           -- when the store took it
);

-- Patients known to have osteoporosis or to be on treatment (optional CSV).
CREATE TABLE IF NOT EXISTS known_conditions (
    patient_id VARCHAR NOT NULL,
    condition  VARCHAR NOT NULL,
    since      DATE,
    source     VARCHAR,
    loaded_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (patient_id, condition)
);

-- Who each run listed: the flags that outcome matching follows up.
CREATE TABLE IF NOT EXISTS worklist_entries (
    run_id           VARCHAR NOT NULL,
    patient_id       VARCHAR NOT NULL,
    site             VARCHAR NOT NULL,
    sop_instance_uid VARCHAR NOT NULL,
    study_date       DATE,
    score            DOUBLE NOT NULL,
    band             VARCHAR NOT NULL,
    flagged_on       DATE NOT NULL,
    PRIMARY KEY (run_id, patient_id)
);

-- A PACS source (osteo_batch.pacs): where the last complete query ended, per PACS
-- (source: its URL as shown, never with credentials). A night resumes from here,
-- with an overlap ([pacs] overlap_days) and a look-back for late arrivals.
CREATE TABLE IF NOT EXISTS pacs_state (
    source           VARCHAR PRIMARY KEY,
    complete_through DATE NOT NULL,   -- every study-date window up to this day was queried completely
    queried_from     DATE NOT NULL,   -- ... from this day (the first --since; an earlier --since reaches back)
    filters          VARCHAR,         -- what the PACS was asked to filter on (JSON); other filters: asked again
    run_id           VARCHAR NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);

-- The studies a PACS listed, with how many instances it said they hold: a study
-- listed again with the same count is not asked for its metadata again, and a
-- study no longer listed in a window queried tonight has its rows removed.
CREATE TABLE IF NOT EXISTS pacs_studies (
    source             VARCHAR NOT NULL,
    study_instance_uid VARCHAR NOT NULL,
    study_date         DATE,
    n_instances        INTEGER,       -- NumberOfStudyRelatedInstances as listed (NULL: not said)
    listed_run_id      VARCHAR NOT NULL,
    PRIMARY KEY (source, study_instance_uid)
);

-- Results written back (osteo_batch.results): one row per image, model and
-- destination PACS, naming the SR stored there. A result re-sent keeps its SR
-- UID (derived from the image and the model), so the PACS keeps one copy.
CREATE TABLE IF NOT EXISTS results_sent (
    sop_instance_uid VARCHAR NOT NULL,
    model_id         VARCHAR NOT NULL,
    destination      VARCHAR NOT NULL,
    sr_instance_uid  VARCHAR NOT NULL,
    run_id           VARCHAR NOT NULL,
    sent_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (sop_instance_uid, model_id, destination)
);

-- What `osteo-batch estimate` predicted before a backlog (osteo_batch.estimate): one row per
-- estimate, from a timed sample of the pending images with the run's model. run_id is the
-- sweep run the estimate made (runs.run_id). source_kind is 'folder', 'dicomweb' or 'dimse',
-- never a path or a URL. Rates in images/s, times in seconds, disk in bytes; what_if holds
-- the other machines (more cores, Ray shards, a GPU measured elsewhere) as JSON.
CREATE TABLE IF NOT EXISTS estimates (
    run_id           VARCHAR PRIMARY KEY,
    estimated_at     TIMESTAMP NOT NULL,
    source_kind      VARCHAR NOT NULL CHECK (source_kind IN ('folder', 'dicomweb', 'dimse')),
    model_id         VARCHAR NOT NULL,
    device           VARCHAR NOT NULL,
    precision        VARCHAR,                 -- as the sample was scored: 'fp32' or 'bf16'
    cpu_capability   VARCHAR NOT NULL,        -- torch's: 'AVX2', 'AVX512', ...
    cores            INTEGER NOT NULL,
    backlog          BIGINT NOT NULL,         -- pending eligible images for this model and source
    sample_size      INTEGER NOT NULL,
    startup_s        DOUBLE,                  -- scoring's fixed start-up (model load, workers, first batches)
    steady_ips       DOUBLE,                  -- scoring's steady rate after it
    heatmap_s        DOUBLE,                  -- seconds per heat map
    flagged_fraction DOUBLE,
    decode_core_ips  DOUBLE,                  -- decode on one worker, one thread
    model_core_ips   DOUBLE,                  -- the model on one thread
    score_s          DOUBLE,                  -- predicted: the score stage
    explain_s        DOUBLE,                  -- predicted: the explain stage
    predicted_s      DOUBLE,                  -- score_s + explain_s
    store_bytes      BIGINT,                  -- the store once the backlog is scored
    parts_bytes      BIGINT,                  -- the backlog's Parquet score parts
    heatmap_bytes    BIGINT,
    spool_bytes      BIGINT,                  -- a PACS's spool at its fullest (NULL: a folder)
    window_hours     DOUBLE NOT NULL,
    nights           INTEGER,
    what_if          JSON
);
