"""The clinician's review of draft reports: versions, decisions, signatures, the audit trail
(docs/architecture.md, "Drafts and their review" and "Audit trail")."""
