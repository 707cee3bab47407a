//! A file played in a loop at the path's fps: a recorded scene without a camera, and the
//! benchmark's way of giving camportal and ffmpeg the very same pictures. Raw I420 (what
//! `ffmpeg -f rawvideo -pix_fmt yuv420p` writes), MJPEG (concatenated JPEGs, `-f mjpeg`: what a
//! webcam sends, decoded and encoded as a webcam's would be) or H.264 Annex B (`-f h264`: passed
//! through, as a camera's own H.264); the format is given or read from the first bytes.
//!
//! Pictures are read as they are needed, so a long clip costs no memory; the page cache keeps a
//! clip that is played over and over off the disk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::config::StreamFormat;
use crate::frame::RawFrame;
use crate::source::pacer::Pacer;
use crate::source::stream::{PictureStream, detect};
use crate::source::{Captured, Source, SourceError, SourceInfo};

/// Bytes read at a time from an MJPEG or H.264 file.
const READ_SIZE: usize = 64 * 1024;

/// Opens `path` as a file of `format` (read from its first bytes if not given) with pictures of
/// `width` x `height` (H.264 is passed through at whatever size it has), played at `fps`.
pub(crate) fn open(
    path: &Path,
    format: Option<StreamFormat>,
    width: u32,
    height: u32,
    fps: u32,
) -> Result<Box<dyn Source>, SourceError> {
    let fail = |message: String| SourceError {
        what: path.display().to_string(),
        message,
    };
    let format = match format {
        Some(format) => format,
        None => {
            let mut head = Vec::with_capacity(256);
            File::open(path)
                .map_err(|err| fail(format!("cannot open: {err}")))?
                .take(256)
                .read_to_end(&mut head)
                .map_err(|err| fail(format!("cannot read: {err}")))?;
            // Too short to tell: taken as raw, whose size check then says what is wrong.
            detect(&head).map_err(fail)?.unwrap_or(StreamFormat::I420)
        }
    };
    Ok(match format {
        StreamFormat::I420 => Box::new(FileSource::open(path, width, height, fps)?),
        compressed => Box::new(StreamFile::open(path, compressed, width, height, fps)?),
    })
}

/// An MJPEG or H.264 file, cut into pictures as it is read, from the start again at its end.
struct StreamFile {
    path: PathBuf,
    file: File,
    pictures: PictureStream,
    pacer: Pacer,
    buf: Vec<u8>,
    /// Pictures since the file was last (re)started: a file without any is an error, not a
    /// loop forever.
    in_this_pass: u64,
}

impl StreamFile {
    fn open(
        path: &Path,
        format: StreamFormat,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<StreamFile, SourceError> {
        let fail = |message: String| SourceError {
            what: path.display().to_string(),
            message,
        };
        let file = File::open(path).map_err(|err| fail(format!("cannot open: {err}")))?;
        Ok(StreamFile {
            path: path.to_owned(),
            file,
            pictures: PictureStream::new(format, width, height).map_err(fail)?,
            pacer: Pacer::new(fps),
            buf: vec![0; READ_SIZE],
            in_this_pass: 0,
        })
    }

    fn fail(&self, message: String) -> SourceError {
        SourceError {
            what: self.path.display().to_string(),
            message,
        }
    }
}

impl Source for StreamFile {
    fn next(&mut self) -> Result<Captured, SourceError> {
        loop {
            let pacer = &mut self.pacer;
            match self.pictures.next(|| pacer.wait_for_tick()) {
                Ok(Some(captured)) => {
                    self.in_this_pass += 1;
                    return Ok(captured);
                }
                Ok(None) => {}
                Err(err) => return Err(self.fail(err)),
            }
            let n = self
                .file
                .read(&mut self.buf)
                .map_err(|err| self.fail(format!("cannot read: {err}")))?;
            if n > 0 {
                self.pictures.push(&self.buf[..n]);
                continue;
            }
            // The end: from the start again (an H.264 file's last access unit is cut when the
            // first comes round again).
            if self.in_this_pass == 0 {
                return Err(self.fail(format!(
                    "no whole {} picture in the file",
                    self.pictures.format()
                )));
            }
            self.in_this_pass = 0;
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(|err| self.fail(format!("cannot rewind: {err}")))?;
        }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            camera: None,
            format: Some(self.pictures.format().to_string()),
            keyframe_on_request: false,
        }
    }
}

/// A file of raw I420 pictures, read one at a time.
pub(crate) struct FileSource {
    path: PathBuf,
    file: File,
    width: u32,
    height: u32,
    pictures: u64,
    /// Index of the next picture to read.
    next: u64,
    pacer: Pacer,
}

impl FileSource {
    /// Opens `path`, which must hold a whole number (at least one) of `width` x `height` I420
    /// pictures.
    pub(crate) fn open(
        path: &Path,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<FileSource, SourceError> {
        let fail = |message: String| SourceError {
            what: path.display().to_string(),
            message,
        };
        let file = File::open(path).map_err(|err| fail(format!("cannot open: {err}")))?;
        let len = file
            .metadata()
            .map_err(|err| fail(format!("cannot read its size: {err}")))?
            .len();
        let picture = RawFrame::i420_len(width, height) as u64;
        let pictures = count_pictures(len, picture).map_err(fail)?;
        Ok(FileSource {
            path: path.to_owned(),
            file,
            width,
            height,
            pictures,
            next: 0,
            pacer: Pacer::new(fps),
        })
    }

    fn fail(&self, message: String) -> SourceError {
        SourceError {
            what: self.path.display().to_string(),
            message,
        }
    }
}

/// How many pictures of `picture` bytes a file of `len` bytes holds, or why it is no such file.
fn count_pictures(len: u64, picture: u64) -> Result<u64, String> {
    if len == 0 {
        return Err("the file is empty".to_owned());
    }
    if picture == 0 || !len.is_multiple_of(picture) {
        return Err(format!(
            "{len} bytes is not a whole number of I420 pictures of {picture} bytes: \
             check encoding.width and encoding.height against the file"
        ));
    }
    Ok(len / picture)
}

impl Source for FileSource {
    fn next(&mut self) -> Result<Captured, SourceError> {
        if self.next == self.pictures {
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(|err| self.fail(format!("cannot rewind: {err}")))?;
            self.next = 0;
        }
        let mut data = vec![0u8; RawFrame::i420_len(self.width, self.height)];
        // A file that shrank under us is an error (the path restarts and re-checks it).
        self.file
            .read_exact(&mut data)
            .map_err(|err| self.fail(format!("cannot read picture {}: {err}", self.next)))?;
        self.next += 1;
        let capture = self.pacer.wait_for_tick();
        Ok(Captured::Raw(RawFrame {
            width: self.width,
            height: self.height,
            data,
            capture,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn raw(c: Captured) -> RawFrame {
        match c {
            Captured::Raw(f) => f,
            Captured::Jpeg(..) | Captured::H264(_) => panic!("a file yields raw pictures"),
        }
    }

    #[test]
    fn plays_the_pictures_in_a_loop() {
        let (w, h) = (32u32, 16u32);
        let size = RawFrame::i420_len(w, h);
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        for i in 0..3u8 {
            file.write_all(&vec![i; size]).expect("write");
        }
        let mut src = FileSource::open(file.path(), w, h, 1000).expect("opens");
        let firsts: Vec<u8> = (0..7)
            .map(|_| raw(src.next().expect("picture")).data[0])
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2, 0]);
        let f = raw(src.next().expect("picture"));
        assert_eq!((f.width, f.height, f.data.len()), (w, h, size));
    }

    #[test]
    fn a_compressed_file_without_a_whole_picture_is_an_error_not_a_loop() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        // A JPEG that never ends.
        std::fs::write(file.path(), [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2]).expect("write");
        let mut src = open(file.path(), None, 32, 16, 1000).expect("opens");
        let err = src.next().expect_err("no picture");
        assert!(err.message.contains("no whole mjpeg picture"), "{err}");
    }

    #[test]
    fn wrong_size_missing_and_empty_files_are_clear_errors() {
        assert_eq!(count_pictures(3 * 768, 768), Ok(3));
        let err = count_pictures(1000, 768).unwrap_err();
        assert!(err.contains("not a whole number"), "{err}");
        assert!(count_pictures(0, 768).unwrap_err().contains("empty"));

        let missing = FileSource::open(Path::new("/nonexistent/clip.yuv"), 32, 16, 30)
            .err()
            .expect("missing file");
        assert_eq!(missing.what, "/nonexistent/clip.yuv");
        assert!(missing.message.contains("cannot open"), "{missing}");

        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), [0u8; 100]).expect("write");
        let err = FileSource::open(file.path(), 32, 16, 30)
            .err()
            .expect("bad size");
        assert!(err.message.contains("encoding.width"), "{err}");
    }
}
