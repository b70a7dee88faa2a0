//! Small HTTP helpers for tests: ureq for ordinary requests, raw sockets for
//! the framing cases (chunked, Expect: 100-continue, pipelining).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Status, headers (lower-case names) and body of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` field of an InfluxDB-style JSON error body.
    pub fn error(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body));
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {json}"))
            .to_owned()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|name| {
            let value = response.header(&name).unwrap_or("").to_owned();
            (name, value)
        })
        .collect();
    let body = response.into_string().expect("readable body");
    Reply {
        status,
        headers,
        body,
    }
}

pub fn get(url: &str) -> Reply {
    reply(agent().get(url).call())
}

pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    reply(request.send_bytes(body))
}

pub fn post_form(url: &str, form: &[(&str, &str)]) -> Reply {
    reply(agent().post(url).send_form(form))
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut out = vec![0; compressor.gzip_compress_bound(body.len())];
    let len = compressor.gzip_compress(body, &mut out).expect("gzip");
    out.truncate(len);
    out
}

/// A raw connection for requests ureq cannot express.
pub struct Raw {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: std::net::SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect to fluxgate");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Raw {
            stream,
            buffered: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a POST of `body` to `path_and_query` with its Content-Length,
    /// the body in `pieces` pieces 10 ms apart, as a slow link delivers it
    /// (fluxgate reads each piece on its own).
    pub fn post_in_pieces(&mut self, path_and_query: &str, body: &[u8], pieces: usize) {
        self.send(
            format!(
                "POST {path_and_query} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        for piece in body.chunks(body.len() / pieces + 1) {
            self.send(piece);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads one response (head, and a Content-Length body if any).
    pub fn read_response(&mut self) -> Reply {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = response.parse(&self.buffered) {
                let status = response.code.unwrap();
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while self.buffered.len() < head_len + length {
                    self.fill();
                }
                let body = String::from_utf8_lossy(&self.buffered[head_len..head_len + length])
                    .into_owned();
                self.buffered.drain(..head_len + length);
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            self.fill();
        }
    }

    /// True when nothing from the server is waiting to be read right now.
    pub fn has_nothing_to_read(&mut self) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let read = self.stream.read(&mut byte);
        self.stream.set_nonblocking(false).unwrap();
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Ok(1) => {
                self.buffered.push(byte[0]);
                false
            }
            _ => false,
        }
    }

    /// Ends the request stream (half-close): the server sees EOF.
    pub fn finish_sending(&mut self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
    }

    /// True once the server has closed the connection (EOF with nothing buffered).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a full response; got {:?}",
            String::from_utf8_lossy(&self.buffered)
        );
        self.buffered.extend_from_slice(&chunk[..n]);
    }
}
