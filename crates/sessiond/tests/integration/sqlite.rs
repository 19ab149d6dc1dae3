//! The conformance suite on the embedded SQLite backend.

crate::conformance_suite!(crate::common::sqlite_backend);
crate::rotation_suite!(crate::common::sqlite_backend);
