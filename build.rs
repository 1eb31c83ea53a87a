//! Fails the build loudly unless the system libsolv and libsolvext are found.
//!
//! libsolv-sys silently falls back to a bundled copy built for Debian version
//! rules; that copy cannot compare RPM versions, so a tree solved with it would
//! be wrong. We refuse to build instead.

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    for lib in ["libsolv", "libsolvext"] {
        if let Err(e) = pkg_config::Config::new()
            .atleast_version("0.7")
            .cargo_metadata(false)
            .probe(lib)
        {
            panic!(
                "\n\narbor needs the system {lib} (>= 0.7, built with RPM support) found through pkg-config: {e}\n\
                 Run scripts/setup (Debian: apt-get install libsolv-dev libsolvext-dev).\n\
                 The bundled libsolv that libsolv-sys falls back to has no RPM version rules and is refused.\n"
            );
        }
    }
}
