//! Helpers shared by the unit tests.

use std::path::Path;

/// Compares `got` with the golden file `name` under `dir` (relative to the
/// source tree); `ARBOR_UPDATE_GOLDEN=1` rewrites the file instead.
pub fn check_golden(dir: &str, name: &str, got: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let path = dir.join(name);
    if std::env::var_os("ARBOR_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&dir).expect("creating the golden directory");
        std::fs::write(&path, got).expect("writing the golden file");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (ARBOR_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}
