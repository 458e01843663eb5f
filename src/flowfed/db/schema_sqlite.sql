-- The flowfed catalog schema for SQLite: what flowfed.db.models.metadata.create_all
-- emits, run by Database.upgrade on an empty SQLite database. Generated; do not edit.
-- Regenerate after changing models.py: python -m flowfed.db --write-sqlite-ddl

CREATE TABLE runs (
	id VARCHAR(32) NOT NULL,
	flow_name VARCHAR(255) NOT NULL,
	flow_version VARCHAR(64) NOT NULL,
	flow_file TEXT,
	spec JSON NOT NULL,
	params JSON NOT NULL,
	status VARCHAR(16) NOT NULL,
	error TEXT,
	created_at FLOAT NOT NULL,
	ended_at FLOAT,
	owner VARCHAR(64),
	lease_until FLOAT,
	principal VARCHAR(255),
	retry_of VARCHAR(32),
	"trigger" VARCHAR(255),
	PRIMARY KEY (id)
);

CREATE TABLE transitions (
	id INTEGER NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	run_id VARCHAR(32) NOT NULL,
	src VARCHAR(16) NOT NULL,
	dst VARCHAR(16) NOT NULL,
	at FLOAT NOT NULL,
	attempt INTEGER DEFAULT '1' NOT NULL,
	detail TEXT,
	PRIMARY KEY (id)
);

CREATE INDEX ix_transitions_task_id ON transitions (task_id);

CREATE TABLE artifacts (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	version INTEGER NOT NULL,
	hash VARCHAR(64) NOT NULL,
	size BIGINT NOT NULL,
	kind VARCHAR(16) NOT NULL,
	type_name VARCHAR(255) NOT NULL,
	uri TEXT NOT NULL,
	run_id VARCHAR(32) NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	step VARCHAR(255) NOT NULL,
	node VARCHAR(255) NOT NULL,
	shareable BOOLEAN DEFAULT 1 NOT NULL,
	pickled BOOLEAN DEFAULT 0 NOT NULL,
	created_at FLOAT NOT NULL,
	meta JSON,
	PRIMARY KEY (id),
	CONSTRAINT uq_artifacts_name_version UNIQUE (name, version)
);

CREATE INDEX ix_artifacts_hash ON artifacts (hash);

CREATE INDEX ix_artifacts_name ON artifacts (name);

CREATE TABLE run_artifacts (
	run_id VARCHAR(32) NOT NULL,
	artifact_id VARCHAR(32) NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	output VARCHAR(255),
	reused BOOLEAN DEFAULT 0 NOT NULL,
	PRIMARY KEY (run_id, artifact_id)
);

CREATE TABLE logs (
	id INTEGER NOT NULL,
	run_id VARCHAR(32) NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	ts FLOAT NOT NULL,
	level VARCHAR(16) NOT NULL,
	message TEXT NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_logs_task_id ON logs (task_id);

CREATE TABLE metrics (
	id INTEGER NOT NULL,
	run_id VARCHAR(32) NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	value FLOAT NOT NULL,
	step INTEGER,
	ts FLOAT NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_metrics_task_id ON metrics (task_id);

CREATE TABLE cache_entries (
	"key" VARCHAR(64) NOT NULL,
	tool VARCHAR(255) NOT NULL,
	run_id VARCHAR(32) NOT NULL,
	task_id VARCHAR(32) NOT NULL,
	outputs JSON NOT NULL,
	created_at FLOAT NOT NULL,
	PRIMARY KEY ("key")
);

CREATE TABLE blobs (
	hash VARCHAR(64) NOT NULL,
	data BLOB NOT NULL,
	PRIMARY KEY (hash)
);

CREATE TABLE flows (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	version INTEGER NOT NULL,
	spec JSON NOT NULL,
	source TEXT,
	format VARCHAR(16) NOT NULL,
	created_at FLOAT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_flows_name_version UNIQUE (name, version)
);

CREATE INDEX ix_flows_name ON flows (name);

CREATE TABLE api_tokens (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	role VARCHAR(16) NOT NULL,
	secret_hash VARCHAR(64) NOT NULL,
	created_at FLOAT NOT NULL,
	expires_at FLOAT,
	revoked_at FLOAT,
	last_used_at FLOAT,
	PRIMARY KEY (id)
);

CREATE TABLE oauth_clients (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	role VARCHAR(16) NOT NULL,
	scope TEXT NOT NULL,
	secret_hash VARCHAR(64) NOT NULL,
	created_at FLOAT NOT NULL,
	revoked_at FLOAT,
	last_used_at FLOAT,
	PRIMARY KEY (id)
);

CREATE TABLE signing_keys (
	id VARCHAR(64) NOT NULL,
	secret TEXT NOT NULL,
	created_at FLOAT NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE events (
	run_id VARCHAR(32) NOT NULL,
	seq INTEGER NOT NULL,
	task_id VARCHAR(32),
	kind VARCHAR(32) NOT NULL,
	payload JSON NOT NULL,
	ts FLOAT NOT NULL,
	PRIMARY KEY (run_id, seq)
);

CREATE TABLE triggers (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	kind VARCHAR(16) NOT NULL,
	spec JSON NOT NULL,
	flow_name VARCHAR(255) NOT NULL,
	enabled BOOLEAN DEFAULT 1 NOT NULL,
	created_at FLOAT NOT NULL,
	updated_at FLOAT NOT NULL,
	watermark FLOAT NOT NULL,
	event_since FLOAT NOT NULL,
	last_fired_at FLOAT,
	last_run_id VARCHAR(32),
	PRIMARY KEY (id),
	CONSTRAINT uq_triggers_name UNIQUE (name)
);

CREATE TABLE platform_events (
	id INTEGER NOT NULL,
	kind VARCHAR(64) NOT NULL,
	payload JSON NOT NULL,
	ts FLOAT NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_platform_events_ts ON platform_events (ts);

CREATE TABLE nodes (
	name VARCHAR(255) NOT NULL,
	token_hash VARCHAR(64) NOT NULL,
	created_at FLOAT NOT NULL,
	last_seen FLOAT,
	datasets JSON NOT NULL,
	status VARCHAR(16) NOT NULL,
	PRIMARY KEY (name),
	UNIQUE (token_hash)
);

CREATE TABLE node_dataset_changes (
	id INTEGER NOT NULL,
	node VARCHAR(255) NOT NULL,
	dataset VARCHAR(255) NOT NULL,
	old_hash VARCHAR(64),
	new_hash VARCHAR(64) NOT NULL,
	ts FLOAT NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_node_dataset_changes_node ON node_dataset_changes (node);

CREATE TABLE tasks (
	id VARCHAR(32) NOT NULL,
	run_id VARCHAR(32) NOT NULL,
	step VARCHAR(255) NOT NULL,
	tool VARCHAR(255) NOT NULL,
	tool_version VARCHAR(64) NOT NULL,
	code_hash VARCHAR(64),
	node VARCHAR(255) DEFAULT 'local' NOT NULL,
	round INTEGER,
	plan_key VARCHAR(512),
	dataset VARCHAR(255),
	variant JSON,
	iteration INTEGER DEFAULT '1' NOT NULL,
	attempt INTEGER DEFAULT '1' NOT NULL,
	state VARCHAR(16) NOT NULL,
	cache_key VARCHAR(64),
	cached BOOLEAN DEFAULT 0 NOT NULL,
	error JSON,
	metrics JSON,
	progress FLOAT,
	created_at FLOAT NOT NULL,
	started_at FLOAT,
	ended_at FLOAT,
	label VARCHAR(255),
	resources JSON,
	attempt_resources JSON,
	PRIMARY KEY (id),
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tasks_cache_key ON tasks (cache_key);

CREATE INDEX ix_tasks_run_id ON tasks (run_id);

CREATE TABLE artifact_parents (
	artifact_id VARCHAR(32) NOT NULL,
	parent_id VARCHAR(32) NOT NULL,
	PRIMARY KEY (artifact_id, parent_id),
	FOREIGN KEY(artifact_id) REFERENCES artifacts (id) ON DELETE CASCADE
);

CREATE TABLE trigger_fires (
	id VARCHAR(32) NOT NULL,
	trigger_id VARCHAR(32) NOT NULL,
	fire_key VARCHAR(255) NOT NULL,
	status VARCHAR(16) NOT NULL,
	run_id VARCHAR(32),
	reason TEXT,
	event JSON NOT NULL,
	params JSON,
	catchup BOOLEAN DEFAULT 0 NOT NULL,
	scheduled_for FLOAT,
	created_at FLOAT NOT NULL,
	updated_at FLOAT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_trigger_fires_key UNIQUE (trigger_id, fire_key),
	FOREIGN KEY(trigger_id) REFERENCES triggers (id) ON DELETE CASCADE
);

CREATE INDEX ix_trigger_fires_trigger_id ON trigger_fires (trigger_id);
