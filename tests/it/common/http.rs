//! A tiny HTTP/1.1 file server for tests: serves a directory, honours
//! `Range: bytes=N-`, and records every request path (`HEAD /path` for a HEAD).

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A running server; it stops when the test process ends.
pub struct Server {
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    /// Request paths, in order (`HEAD /path` for a HEAD request).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves `root` on a free loopback port.
    pub fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut range_from = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(r) = lower.strip_prefix("range: bytes=") {
                        range_from = r.trim().trim_end_matches('-').parse::<usize>().ok();
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let head_only = first.starts_with("HEAD ");
                log2.lock().unwrap().push(if head_only {
                    format!("HEAD {path}")
                } else {
                    path.clone()
                });
                let file = root.join(path.trim_start_matches('/'));
                // Streamed from the file: tests serve packages of hundreds of MiB.
                match std::fs::File::open(&file).and_then(|f| f.metadata().map(|m| (f, m.len()))) {
                    Ok((mut body, len)) if !std::fs::metadata(&file).is_ok_and(|m| m.is_dir()) => {
                        let (status, from) = match range_from {
                            Some(from) if from as u64 <= len => ("206 Partial Content", from as u64),
                            _ => ("200 OK", 0),
                        };
                        let head = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            len - from
                        );
                        let _ = stream.write_all(head.as_bytes()).and_then(|_| {
                            if head_only {
                                return Ok(());
                            }
                            body.seek(SeekFrom::Start(from))?;
                            std::io::copy(&mut body, &mut stream).map(|_| ())
                        });
                    }
                    _ => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            }
        });
        Server { url, log }
    }

    /// Requests seen so far, then forgets them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}
