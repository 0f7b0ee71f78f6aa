//! A byte-level shim in front of the device-plugin gRPC server. Kubelets before 1.26 dial plugin
//! sockets with grpc-go in a way that sends the socket *path* as the HTTP/2 `:authority`
//! (`/var/lib/kubelet/device-plugins/…sock`); the Rust HTTP/2 server refuses such an authority with
//! RST_STREAM(PROTOCOL_ERROR), so the kubelet could never list our devices. The shim rewrites the
//! value of every `:authority` field the client sends to `localhost` (what newer kubelets send) and
//! passes everything else through untouched.
//!
//! It does not decode HPACK: field representations are self-delimiting, so it walks them, replaces
//! the literal `:authority` values and copies the rest byte for byte. Replacing a value that the
//! client also adds to its dynamic table keeps both tables in the same order (only the entry's
//! size differs, and the server's table then only ever holds more, older entries than the client
//! references), so later indexed references still resolve to the rewritten field.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface of HTTP/2.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Index of `:authority` in the HPACK static table.
const AUTHORITY_INDEX: u64 = 1;
/// SETTINGS_MAX_FRAME_SIZE's initial value: frames the shim writes never exceed it.
const MAX_FRAME: usize = 16_384;
/// What the authority becomes.
const LOCALHOST: &[u8] = b"localhost";

/// Why a header block or frame could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed HTTP/2 header block from the kubelet: {0}")]
pub struct Malformed(&'static str);

/// An HPACK integer with an `n`-bit prefix at `b[*i]`; advances `i`.
fn integer(b: &[u8], i: &mut usize, n: u8) -> Result<u64, Malformed> {
    let first = *b.get(*i).ok_or(Malformed("truncated integer"))?;
    *i += 1;
    let max = (1u64 << n) - 1;
    let mut v = u64::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*i).ok_or(Malformed("truncated integer"))?;
        *i += 1;
        v += u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        if shift > 56 {
            return Err(Malformed("integer too large"));
        }
    }
}

/// Skip the string literal at `b[*i]` (length prefix and bytes).
fn skip_string(b: &[u8], i: &mut usize) -> Result<(), Malformed> {
    let len = integer(b, i, 7)? as usize;
    let end = i.checked_add(len).ok_or(Malformed("string too long"))?;
    if end > b.len() {
        return Err(Malformed("truncated string"));
    }
    *i = end;
    Ok(())
}

/// `block` with every literal `:authority` value replaced by `localhost`.
pub fn rewrite_block(block: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::with_capacity(block.len());
    let mut i = 0;
    while i < block.len() {
        let start = i;
        let b = block[i];
        let prefix = if b & 0x80 != 0 {
            // Indexed field: copied as is.
            integer(block, &mut i, 7)?;
            out.extend_from_slice(&block[start..i]);
            continue;
        } else if b & 0xc0 == 0x40 {
            6
        } else if b & 0xe0 == 0x20 {
            // Dynamic table size update.
            integer(block, &mut i, 5)?;
            out.extend_from_slice(&block[start..i]);
            continue;
        } else {
            4
        };
        let name_index = integer(block, &mut i, prefix)?;
        if name_index == 0 {
            skip_string(block, &mut i)?;
        }
        let value_start = i;
        skip_string(block, &mut i)?;
        out.extend_from_slice(&block[start..value_start]);
        if name_index == AUTHORITY_INDEX {
            // Length < 127 fits the 7-bit prefix; H bit clear = not Huffman-coded.
            out.push(LOCALHOST.len() as u8);
            out.extend_from_slice(LOCALHOST);
        } else {
            out.extend_from_slice(&block[value_start..i]);
        }
    }
    Ok(out)
}

/// One frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

fn encode_header(h: FrameHeader) -> [u8; 9] {
    let l = h.len as u32;
    let s = h.stream.to_be_bytes();
    [
        (l >> 16) as u8,
        (l >> 8) as u8,
        l as u8,
        h.kind,
        h.flags,
        s[0],
        s[1],
        s[2],
        s[3],
    ]
}

async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<FrameHeader>> {
    let mut h = [0u8; 9];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(FrameHeader {
        len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]),
    }))
}

fn invalid(e: Malformed) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// The header block of a HEADERS frame payload (padding and priority split off) and the priority.
fn split_headers(flags: u8, payload: &[u8]) -> Result<(Option<[u8; 5]>, Vec<u8>), Malformed> {
    let mut body = payload;
    if flags & FLAG_PADDED != 0 {
        let pad = usize::from(*body.first().ok_or(Malformed("padding"))?);
        body = body
            .get(1..body.len().checked_sub(pad).ok_or(Malformed("padding"))?)
            .ok_or(Malformed("padding"))?;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let p: [u8; 5] = body
            .get(..5)
            .and_then(|s| s.try_into().ok())
            .ok_or(Malformed("priority"))?;
        priority = Some(p);
        body = &body[5..];
    }
    Ok((priority, body.to_vec()))
}

/// A header block whose CONTINUATION frames are still coming.
struct OpenBlock {
    stream: u32,
    priority: Option<[u8; 5]>,
    /// Flags of its HEADERS frame.
    flags: u8,
    /// The fragments so far.
    block: Vec<u8>,
}

/// Copy the client's side of a connection to the server, rewriting `:authority` in header blocks.
pub async fn client_to_server<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/2 client",
        ));
    }
    to.write_all(&preface).await?;
    let mut pending: Option<OpenBlock> = None;
    while let Some(h) = read_header(&mut from).await? {
        let mut payload = vec![0u8; h.len];
        from.read_exact(&mut payload).await?;
        match h.kind {
            FRAME_HEADERS => {
                let (priority, block) = split_headers(h.flags, &payload).map_err(invalid)?;
                pending = Some(OpenBlock {
                    stream: h.stream,
                    priority,
                    flags: h.flags,
                    block,
                });
            }
            FRAME_CONTINUATION if pending.is_some() => {
                if let Some(p) = pending.as_mut() {
                    p.block.extend_from_slice(&payload);
                }
            }
            _ => {
                to.write_all(&encode_header(h)).await?;
                to.write_all(&payload).await?;
                continue;
            }
        }
        if h.flags & FLAG_END_HEADERS == 0 {
            continue;
        }
        let Some(OpenBlock {
            stream,
            priority,
            flags,
            block,
        }) = pending.take()
        else {
            continue;
        };
        let mut body = Vec::new();
        if let Some(p) = priority {
            body.extend_from_slice(&p);
        }
        body.extend_from_slice(&rewrite_block(&block).map_err(invalid)?);
        // HEADERS then CONTINUATIONs, none over the default maximum frame size.
        let chunks: Vec<&[u8]> = if body.is_empty() {
            vec![&body[..]]
        } else {
            body.chunks(MAX_FRAME).collect()
        };
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let (kind, mut f) = if n == 0 {
                (FRAME_HEADERS, flags & !(FLAG_PADDED | FLAG_END_HEADERS))
            } else {
                (FRAME_CONTINUATION, 0)
            };
            if n == last {
                f |= FLAG_END_HEADERS;
            }
            let out = FrameHeader {
                len: chunk.len(),
                kind,
                flags: f,
                stream,
            };
            to.write_all(&encode_header(out)).await?;
            to.write_all(chunk).await?;
        }
    }
    to.shutdown().await
}

/// Relay one kubelet connection to the in-process server end `server`, rewriting as above.
pub async fn relay<C, S>(client: C, server: S)
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, mut cw) = tokio::io::split(client);
    let (mut sr, sw) = tokio::io::split(server);
    let up = client_to_server(cr, sw);
    let down = tokio::io::copy(&mut sr, &mut cw);
    let (u, d) = tokio::join!(up, down);
    if let Err(e) = u {
        tracing::debug!(error = %e, "kubelet → device plugin relay ended");
    }
    if let Err(e) = d {
        tracing::debug!(error = %e, "device plugin → kubelet relay ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal field with incremental indexing and an indexed name (not Huffman-coded).
    fn literal(index: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x40 | index, value.len() as u8];
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn the_authority_becomes_localhost_and_everything_else_stays() {
        let path = b"/var/lib/kubelet/device-plugins/1700000000-eni.sock";
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (indexed)
        block.extend(literal(1, path));
        block.extend(literal(4, b"/v1beta1.DevicePlugin/ListAndWatch"));
        block.push(0xbe); // an indexed dynamic-table reference
        block.extend([0x00, 0x02, b't', b'e', 0x08]); // literal name "te" without indexing...
        block.extend(b"trailers");
        let out = rewrite_block(&block).unwrap();
        let mut want = vec![0x83, 0x86];
        want.extend(literal(1, b"localhost"));
        want.extend(literal(4, b"/v1beta1.DevicePlugin/ListAndWatch"));
        want.push(0xbe);
        want.extend([0x00, 0x02, b't', b'e', 0x08]);
        want.extend(b"trailers");
        assert_eq!(out, want);
    }

    #[test]
    fn long_and_huffman_values_are_walked_by_their_length() {
        // :authority without indexing (0x01 = 4-bit prefix, index 1), Huffman flag, length 200.
        let mut block = vec![0x01, 0x80 | 0x7f, 200 - 127];
        block.extend(vec![0xaa; 200]);
        block.extend(literal(4, b"/x"));
        let out = rewrite_block(&block).unwrap();
        let mut want = vec![0x01, 9];
        want.extend(b"localhost");
        want.extend(literal(4, b"/x"));
        assert_eq!(out, want);
        assert!(rewrite_block(&[0x41, 0x05, b'a']).is_err(), "truncated");
    }

    #[tokio::test]
    async fn frames_pass_through_and_header_blocks_are_joined_and_rewritten() {
        let mut input = PREFACE.to_vec();
        let settings = FrameHeader {
            len: 0,
            kind: 0x4,
            flags: 0,
            stream: 0,
        };
        input.extend(encode_header(settings));
        let block = literal(1, b"/run/x.sock");
        let (a, b) = block.split_at(3);
        // HEADERS (padded, 2 bytes of padding) + CONTINUATION.
        let mut first = vec![2u8];
        first.extend_from_slice(a);
        first.extend([0, 0]);
        input.extend(encode_header(FrameHeader {
            len: first.len(),
            kind: FRAME_HEADERS,
            flags: FLAG_PADDED,
            stream: 1,
        }));
        input.extend(first);
        input.extend(encode_header(FrameHeader {
            len: b.len(),
            kind: FRAME_CONTINUATION,
            flags: FLAG_END_HEADERS,
            stream: 1,
        }));
        input.extend_from_slice(b);
        let data = FrameHeader {
            len: 3,
            kind: 0x0,
            flags: 0x1,
            stream: 1,
        };
        input.extend(encode_header(data));
        input.extend([1, 2, 3]);

        let mut out = Vec::new();
        client_to_server(&input[..], &mut out).await.unwrap();
        let mut want = PREFACE.to_vec();
        want.extend(encode_header(settings));
        let rewritten = literal(1, b"localhost");
        want.extend(encode_header(FrameHeader {
            len: rewritten.len(),
            kind: FRAME_HEADERS,
            flags: FLAG_END_HEADERS,
            stream: 1,
        }));
        want.extend(rewritten);
        want.extend(encode_header(data));
        want.extend([1, 2, 3]);
        assert_eq!(out, want);
    }
}
