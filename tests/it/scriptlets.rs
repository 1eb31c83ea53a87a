//! `arbor compose tree` running package scriptlets, triggers and postprocess
//! scripts: aarch64 ones under qemu-user in the sandbox, lua natively.

use crate::common::{self, Deadline as _};

use std::process::Command;

use common::{Scratch, ok_json, ostree, sample_url};

const TREE: &str = "ref: test/scripts\nrepos: [sample]\n\
    packages: [filesystem, setup, bash, busybox, glibc, sampled]\nrecommends: false\n";

#[test]
fn an_aarch64_compose_runs_shell_lua_and_trigger_scriptlets() {
    let before = common::host_binfmt();
    let t = Scratch::new(&sample_url(), TREE);
    let v = ok_json(&t.compose_tree("repo", &[], &[]));
    assert_eq!(common::host_binfmt(), before, "the host's binfmt_misc must not change");
    let commit = v["commit"].as_str().unwrap().to_string();
    let scripts = &v["scripts"];
    // filesystem %pretrans and glibc %post are lua.
    assert!(scripts["lua"].as_u64().unwrap() >= 2, "{scripts}");
    // + busybox %post, bash %post, sampled %pre, glibc's ldconfig file trigger.
    assert!(scripts["ran"].as_u64().unwrap() >= 6, "{scripts}");
    assert!(
        v.get("skipped_scriptlets")
            .is_none_or(|s| s.as_array().unwrap().is_empty()),
        "{v}"
    );

    let repo = t.path("repo");
    ostree(&repo, &["fsck"]);
    let ls = ostree(&repo, &["ls", "-R", &commit]);
    // busybox's %post ran the aarch64 busybox itself to create its applet links.
    assert!(
        ls.contains("/usr/bin/ls -> /usr/sbin/busybox"),
        "no applet links:\n{ls}"
    );
    let cat = |p: &str| {
        let out = Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["cat", &commit, p])
            .timed_output()
            .unwrap();
        assert!(
            out.status.success(),
            "ostree cat {p}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // The ldconfig transaction file trigger built a real aarch64 cache.
    let cache = cat("/usr/etc/ld.so.cache");
    assert!(cache.starts_with(b"glibc-ld.so.cache1.1"), "not an ld.so.cache");
    let text = String::from_utf8_lossy(&cache);
    assert!(
        text.contains("/usr/lib/aarch64-linux-gnu/libc.so.6") || text.contains("/lib/aarch64-linux-gnu/libc.so.6"),
        "libc missing from ld.so.cache"
    );
    // bash's dynamically linked aarch64 %post, under qemu with the tree's glibc.
    let bashrc = String::from_utf8(cat("/usr/etc/skel/.bashrc")).unwrap();
    assert!(bashrc.contains("aarch64"), "{bashrc}");
    // sampled's %pre added a group with busybox; its sysusers.d entry added the user.
    let group = String::from_utf8(cat("/usr/etc/group")).unwrap();
    let passwd = String::from_utf8(cat("/usr/etc/passwd")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sampleops:") && l.ends_with(":sampled")),
        "{group}"
    );
    assert!(passwd.lines().any(|l| l.starts_with("sampled:x:")), "{passwd}");
    assert!(passwd.starts_with("root:"), "root first:\n{passwd}");

    // Same inputs, same commit: scripts run deterministically.
    let again = ok_json(&t.compose_tree("repo2", &[], &[]));
    assert_eq!(
        again["commit"], v["commit"],
        "a second compose into a fresh repo differs"
    );
}

fn failing_package() -> rpm::Package {
    rpm::PackageBuilder::new("failing", "1.0", "MIT", "noarch", "fails in %post")
        .requires(rpm::Dependency::any("/bin/sh"))
        .post_install_script("echo about to fail on $1; exit 3")
        .build()
        .unwrap()
}

#[test]
fn a_failing_scriptlet_fails_the_compose_with_package_kind_and_output() {
    let t = Scratch::new(
        &sample_url(),
        "ref: test/fail\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, busybox-sh, failing]\nrecommends: false\n",
    );
    common::with_extra_package(&t, failing_package());
    let e = common::err(&t.compose_tree("repo", &[], &[]));
    for want in [
        "failing-1.0",
        "%post",
        "exit status 3",
        "about to fail on 1",
        "ignore-scriptlet-failures",
    ] {
        assert!(e.contains(want), "{want:?} missing from:\n{e}");
    }
    assert!(!t.path("repo/refs/heads/test").exists(), "nothing committed");
}

#[test]
fn a_listed_failure_is_ignored_with_its_reason() {
    let t = Scratch::new(
        &sample_url(),
        "ref: test/fail\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, busybox-sh, failing]\nrecommends: false\nignore-scriptlet-failures:\n  failing %post: known to fail in containers\n",
    );
    common::with_extra_package(&t, failing_package());
    let v = ok_json(&t.compose_tree("repo", &[], &[]));
    assert_eq!(
        v["scripts"]["ignored"][0], "failing %post: known to fail in containers",
        "{v}"
    );
}

#[test]
fn a_postprocess_script_editing_a_hardlinked_file_leaves_the_cache_intact() {
    let t = Scratch::new(
        &sample_url(),
        "ref: test/pp\nrepos: [sample]\npackages: [filesystem, setup, busybox, busybox-sh]\nrecommends: false\n\
         postprocess:\n  - |\n    #!/bin/sh\n    echo hacked >> /usr/sbin/busybox\n    echo ran > /etc/pp-ran\n",
    );
    let v = ok_json(&t.compose_tree("repo", &[], &[]));
    let repo = t.path("repo");
    // A write through a hardlink into the repository would fail fsck.
    ostree(&repo, &["fsck"]);
    let commit = v["commit"].as_str().unwrap();
    let ls = ostree(&repo, &["ls", commit, "/usr/etc/pp-ran"]);
    assert!(ls.contains("/usr/etc/pp-ran"), "{ls}");
}

#[test]
fn a_hung_script_fails_the_compose_at_the_time_limit() {
    let t = Scratch::new(
        &sample_url(),
        "ref: test/hang\nrepos: [sample]\npackages: [filesystem, setup, bash]\nrecommends: false\n\
         postprocess:\n  - \"while :; do :; done\"\n",
    );
    let e = common::err(&t.compose_tree("repo", &["--script-timeout", "2"], &[]));
    assert!(
        e.contains("treefile postprocess #1 was killed after the time limit of 2 s"),
        "{e}"
    );
}

#[test]
fn ignore_list_entries_are_checked() {
    let t = Scratch::new(
        &sample_url(),
        "ref: test/x\nrepos: [sample]\npackages: [filesystem]\nignore-scriptlet-failures:\n  \"filesystem post\": why\n",
    );
    let e = common::err(&t.compose_tree("repo", &[], &[]));
    assert!(
        e.contains("ignore-scriptlet-failures: `filesystem post` is not \"PACKAGE %KIND\""),
        "{e}"
    );
}

#[test]
#[ignore = "needs root: composes as nobody and as root, and compares"]
fn composing_without_root_gives_the_same_tree() {
    common::need_root();
    let t = Scratch::new(&sample_url(), TREE);
    let mine = t.path("nobody");
    std::fs::create_dir(&mine).unwrap();
    for p in [t.path(""), mine.clone(), t.path("t.yaml"), t.path("t.repo")] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_arbor"))
        .args(["compose", "tree", "--arch", "aarch64", "--json", "--repo"])
        .arg(mine.join("repo"))
        .arg("--cache-dir")
        .arg(mine.join("cache"))
        .arg(t.path("t.yaml"))
        .env("HOME", &mine)
        .timed_output()
        .unwrap();
    let rootless = ok_json(&out);
    let rooted = ok_json(&t.compose_tree("repo", &[], &[]));
    let content = |repo: &std::path::Path, commit: &serde_json::Value| {
        let show = ostree(repo, &["show", commit.as_str().unwrap()]);
        show.lines()
            .find(|l| l.starts_with("ContentChecksum"))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        content(&mine.join("repo"), &rootless["commit"]),
        content(&t.path("repo"), &rooted["commit"]),
        "the same files, modes and owners with and without root"
    );
}

#[test]
fn package_and_file_triggers_fire_with_rpms_arguments() {
    let pkg = rpm::PackageBuilder::new("trig", "1.0", "MIT", "noarch", "triggers on busybox and /usr/share")
        .requires(rpm::Dependency::any("/bin/sh"))
        // Fires: busybox is installed, in a version >= 1.0.
        .trigger_in(
            "busybox",
            Some((rpm::DependencyFlags::GREATER | rpm::DependencyFlags::EQUAL, "1:1.0")),
            "echo \"in $1 $2\" >> /etc/trig.log",
        )
        // Never fires: no busybox that new.
        .trigger_in(
            "busybox",
            Some((rpm::DependencyFlags::GREATER, "9:0")),
            "echo never >> /etc/trig.log",
        )
        .trans_file_trigger_in(
            "/usr/share/hello",
            None,
            "while read -r f; do echo \"file $f\" >> /etc/trig.log; done",
        )
        .build()
        .unwrap();
    let t = Scratch::new(
        &sample_url(),
        "ref: test/trig\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, busybox-sh, hello, trig]\nrecommends: false\n",
    );
    common::with_extra_package(&t, pkg);
    let v = ok_json(&t.compose_tree("repo", &[], &[]));
    let out = Command::new("ostree")
        .arg(format!("--repo={}", t.path("repo").display()))
        .args(["cat", v["commit"].as_str().unwrap(), "/usr/etc/trig.log"])
        .timed_output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("in 1 1\n"), "{log}");
    assert!(!log.contains("never"), "{log}");
    assert!(log.contains("file /usr/share/hello/greeting.txt\n"), "{log}");
}

#[test]
fn a_lua_scriptlet_cannot_write_kernel_settings() {
    // Lua runs natively in the sandbox: as root, it is the host's uid 0. It writes
    // back the value already there, so even a failure leaves the host as it was.
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let body = format!(
        "local f = io.open('/proc/sys/kernel/core_pattern', 'w')\n\
         if f and f:write([==[{pattern}]==]) and f:close() then error('wrote core_pattern') end\n\
         print('refused')\n"
    );
    let pkg = rpm::PackageBuilder::new("luakernel", "1.0", "MIT", "noarch", "a lua %post that writes a sysctl")
        .post_install_script(rpm::Scriptlet::new(body).prog(vec!["<lua>"]))
        .build()
        .unwrap();
    let pkg = arbor_sample_repo::build::drop_lua_interp_requires(pkg).unwrap();
    let t = Scratch::new(
        &sample_url(),
        "ref: t/lua\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, luakernel]\nrecommends: false\n",
    );
    common::with_extra_package(&t, pkg);
    ok_json(&t.compose_tree("repo", &[], &[]));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        pattern
    );
}
