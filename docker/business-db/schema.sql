-- The business schema of the reference world (harness/world.py), for the business-db service.
-- Generated: PYTHONPATH=.:plugins .venv/bin/python tests/unit/test_compose.py

CREATE TABLE access_reports (
	id BIGSERIAL NOT NULL,
	customer_id BIGINT NOT NULL,
	request_ref TEXT NOT NULL,
	made_available_at TIMESTAMP WITH TIME ZONE NOT NULL,
	report_id TEXT NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (report_id)
);

CREATE INDEX ix_access_reports_customer_id ON access_reports (customer_id);

CREATE INDEX ix_access_reports_made_available_at ON access_reports (made_available_at);

CREATE TABLE customers (
	id BIGINT NOT NULL,
	customer_no TEXT NOT NULL,
	name TEXT NOT NULL,
	email TEXT,
	phone TEXT,
	address TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	last_activity_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (customer_no)
);

CREATE INDEX ix_customers_last_activity_at ON customers (last_activity_at);

CREATE TABLE erasure_receipts (
	id BIGSERIAL NOT NULL,
	customer_id BIGINT NOT NULL,
	request_ref TEXT NOT NULL,
	run_id TEXT NOT NULL,
	made_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_erasure_receipts_customer_id ON erasure_receipts (customer_id);

CREATE INDEX ix_erasure_receipts_made_at ON erasure_receipts (made_at);

CREATE INDEX ix_erasure_receipts_request_ref ON erasure_receipts (request_ref);

CREATE TABLE contact_persons (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	name TEXT NOT NULL,
	email TEXT NOT NULL,
	phone TEXT NOT NULL,
	role TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	last_activity_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_contact_persons_customer_id ON contact_persons (customer_id);

CREATE INDEX ix_contact_persons_last_activity_at ON contact_persons (last_activity_at);

CREATE TABLE correspondence (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	subject TEXT NOT NULL,
	body TEXT NOT NULL,
	sent_at TIMESTAMP WITH TIME ZONE NOT NULL,
	direction TEXT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_correspondence_customer_id ON correspondence (customer_id);

CREATE INDEX ix_correspondence_sent_at ON correspondence (sent_at);

CREATE TABLE interpreting_assignments (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	interpreter_name TEXT NOT NULL,
	venue TEXT,
	topic TEXT NOT NULL,
	assignment_at TIMESTAMP WITH TIME ZONE NOT NULL,
	notes TEXT,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_interpreting_assignments_assignment_at ON interpreting_assignments (assignment_at);

CREATE INDEX ix_interpreting_assignments_customer_id ON interpreting_assignments (customer_id);

CREATE TABLE invoices (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	invoice_no TEXT NOT NULL,
	invoice_date DATE NOT NULL,
	amount_dkk NUMERIC(12, 2) NOT NULL,
	billing_name TEXT NOT NULL,
	billing_address TEXT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id),
	UNIQUE (invoice_no)
);

CREATE INDEX ix_invoices_customer_id ON invoices (customer_id);

CREATE INDEX ix_invoices_invoice_date ON invoices (invoice_date);

CREATE TABLE marketing_consents (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	email TEXT NOT NULL,
	channel TEXT NOT NULL,
	given_at TIMESTAMP WITH TIME ZONE NOT NULL,
	withdrawn_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_marketing_consents_customer_id ON marketing_consents (customer_id);

CREATE INDEX ix_marketing_consents_withdrawn_at ON marketing_consents (withdrawn_at);

CREATE TABLE privacy_requests (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	request_ref TEXT NOT NULL,
	kind TEXT NOT NULL,
	received_at TIMESTAMP WITH TIME ZONE NOT NULL,
	completed_at TIMESTAMP WITH TIME ZONE,
	extended_at TIMESTAMP WITH TIME ZONE,
	extension_reason TEXT,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id),
	UNIQUE (request_ref)
);

CREATE INDEX ix_privacy_requests_completed_at ON privacy_requests (completed_at);

CREATE INDEX ix_privacy_requests_customer_id ON privacy_requests (customer_id);

CREATE TABLE third_party_data (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	source TEXT NOT NULL,
	description TEXT NOT NULL,
	received_at TIMESTAMP WITH TIME ZONE NOT NULL,
	customer_notified_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_third_party_data_customer_id ON third_party_data (customer_id);

CREATE INDEX ix_third_party_data_customer_notified_at ON third_party_data (customer_notified_at);

CREATE INDEX ix_third_party_data_received_at ON third_party_data (received_at);

CREATE TABLE translation_jobs (
	id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	title TEXT NOT NULL,
	source_lang TEXT NOT NULL,
	target_lang TEXT NOT NULL,
	ordered_at TIMESTAMP WITH TIME ZONE NOT NULL,
	delivered_at TIMESTAMP WITH TIME ZONE,
	notes TEXT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_translation_jobs_customer_id ON translation_jobs (customer_id);

CREATE INDEX ix_translation_jobs_delivered_at ON translation_jobs (delivered_at);

CREATE TABLE documents (
	id BIGINT NOT NULL,
	job_id BIGINT NOT NULL,
	customer_id BIGINT NOT NULL,
	filename TEXT NOT NULL,
	s3_key TEXT NOT NULL,
	archive_path TEXT,
	content_sha256 TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	delivered_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	FOREIGN KEY(job_id) REFERENCES translation_jobs (id),
	FOREIGN KEY(customer_id) REFERENCES customers (id)
);

CREATE INDEX ix_documents_archive_path ON documents (archive_path);

CREATE INDEX ix_documents_customer_id ON documents (customer_id);

CREATE INDEX ix_documents_delivered_at ON documents (delivered_at);

CREATE INDEX ix_documents_job_id ON documents (job_id);

CREATE INDEX ix_documents_s3_key ON documents (s3_key);
