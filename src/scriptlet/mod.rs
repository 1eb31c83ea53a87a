//! Package scriptlets and triggers: which run, in what order, with what
//! arguments (`plan`), the embedded lua interpreter (`lua`), and users and
//! groups (`users`). They run inside `crate::sandbox`.

pub mod exec;
pub mod lua;
pub mod plan;
pub mod users;
