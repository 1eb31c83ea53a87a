//! File capabilities: the text rpm keeps in the header (`cap_net_raw=ep`, as
//! libcap's `cap_to_text` writes it) → the `security.capability` xattr value
//! the kernel reads (`struct vfs_cap_data`, revision 2, little endian).

use anyhow::{Result, bail};

/// Name of the xattr holding file capabilities.
pub const XATTR_NAME: &[u8] = b"security.capability";

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

/// Capability names by number, as libcap spells them (without `cap_`).
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

#[derive(Default)]
struct Sets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

/// Converts capability text to a `security.capability` value; `None` for
/// empty text (rpm sets no capabilities then). Text that grants nothing
/// (`%caps(=)`) still gives the xattr, with empty sets: rpm's
/// `cap_set_fd(cap_from_text("="))` writes one, and `rpm -V` checks for it.
pub fn to_xattr(text: &str) -> Result<Option<Vec<u8>>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut sets = Sets::default();
    for clause in text.split_whitespace() {
        apply_clause(&mut sets, clause).map_err(|e| e.context(format!("file capabilities {text:?}")))?;
    }
    // File capabilities carry one effective bit: it must cover all or nothing.
    let mut magic = VFS_CAP_REVISION_2;
    if sets.effective != 0 {
        if sets.effective != sets.permitted | sets.inheritable {
            bail!("file capabilities {text:?}: the effective set must be empty or equal to permitted + inheritable");
        }
        magic |= VFS_CAP_FLAGS_EFFECTIVE;
    }
    let mut out = Vec::with_capacity(20);
    for word in [
        magic,
        sets.permitted as u32,
        sets.inheritable as u32,
        (sets.permitted >> 32) as u32,
        (sets.inheritable >> 32) as u32,
    ] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    Ok(Some(out))
}

/// One clause: `caplist` followed by one or more `op flags` (`=`, `+`, `-`; `e`, `i`, `p`).
fn apply_clause(sets: &mut Sets, clause: &str) -> Result<()> {
    let op_at = clause
        .find(['=', '+', '-'])
        .ok_or_else(|| anyhow::anyhow!("clause {clause:?} has no operator (=, + or -)"))?;
    let (names, mut actions) = clause.split_at(op_at);
    let caps = if names.is_empty() || names.eq_ignore_ascii_case("all") {
        if names.is_empty() && !actions.starts_with('=') {
            bail!("clause {clause:?} names no capability");
        }
        all_caps()
    } else {
        let mut m = 0u64;
        for n in names.split(',') {
            m |= 1 << cap_number(n)?;
        }
        m
    };
    while let Some(op) = actions.chars().next() {
        let rest = &actions[1..];
        let end = rest.find(['=', '+', '-']).unwrap_or(rest.len());
        let (flags, next) = rest.split_at(end);
        let (mut e, mut i, mut p) = (false, false, false);
        for f in flags.chars() {
            match f.to_ascii_lowercase() {
                'e' => e = true,
                'i' => i = true,
                'p' => p = true,
                other => bail!("clause {clause:?}: unknown flag {other:?}"),
            }
        }
        if op != '=' && flags.is_empty() {
            bail!("clause {clause:?}: {op} needs flags");
        }
        let set = |word: &mut u64, on: bool| match op {
            '=' if on => *word |= caps,
            '=' => *word &= !caps,
            '+' if on => *word |= caps,
            '-' if on => *word &= !caps,
            _ => {}
        };
        set(&mut sets.effective, e);
        set(&mut sets.inheritable, i);
        set(&mut sets.permitted, p);
        actions = next;
    }
    Ok(())
}

fn all_caps() -> u64 {
    (1u64 << NAMES.len()) - 1
}

fn cap_number(name: &str) -> Result<u32> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    if let Some(i) = NAMES.iter().position(|n| *n == bare) {
        return Ok(i as u32);
    }
    // libcap prints capabilities it has no name for as numbers.
    match bare.parse::<u32>() {
        Ok(n) if n < 64 => Ok(n),
        _ => bail!("unknown capability {name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values were written by `setcap` and read back with `getxattr`.
    #[test]
    fn known_vectors() {
        let cases = [
            ("cap_net_raw=ep", "0100000200200000000000000000000000000000"),
            (
                "cap_net_bind_service,cap_net_raw+ep",
                "0100000200240000000000000000000000000000",
            ),
            ("cap_chown,cap_bpf=p", "0000000201000000000000008000000000000000"),
            (
                "cap_setuid,cap_sys_admin=eip",
                "0100000280002000800020000000000000000000",
            ),
            ("cap_setgid=i cap_chown+p", "0000000201000000400000000000000000000000"),
            ("CAP_NET_RAW=pe", "0100000200200000000000000000000000000000"),
        ];
        for (text, hex) in cases {
            let got = to_xattr(text).unwrap_or_else(|e| panic!("{text}: {e:#}"));
            assert_eq!(got.map(hex::encode).as_deref(), Some(hex), "{text}");
        }
    }

    #[test]
    fn empty_text_gives_no_xattr_and_nothing_granted_an_empty_one() {
        assert_eq!(to_xattr("").ok(), Some(None));
        let empty = "0000000200000000000000000000000000000000";
        assert_eq!(to_xattr("=").unwrap().map(hex::encode).as_deref(), Some(empty));
        assert_eq!(
            to_xattr("cap_chown=p cap_chown-p").unwrap().map(hex::encode).as_deref(),
            Some(empty)
        );
    }

    #[test]
    fn invalid_text_is_an_error() {
        for text in [
            "cap_nonsense=p",
            "cap_chown",
            "cap_chown=x",
            "cap_chown=e",
            "+p",
            "cap_chown+",
        ] {
            assert!(to_xattr(text).is_err(), "{text} should be rejected");
        }
    }
}
