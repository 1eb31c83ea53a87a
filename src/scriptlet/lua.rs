//! (being written: stub so the crate builds)

/// Macros.
pub struct Macros;
impl Macros {
    /// Defaults.
    pub fn for_arch(_arch: &str) -> Macros {
        Macros
    }
}
/// Runs lua.
pub fn run(_script: &str, _name: &str, _args: &[String], _m: &Macros) -> i32 {
    eprintln!("lua not available yet");
    1
}
