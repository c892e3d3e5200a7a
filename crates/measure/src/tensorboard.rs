//! TensorBoard event files: tensorboard-rs's summary and event types, written by our own
//! record writer.
//!
//! The crate's protobuf types are sound; its `FileWriter` is not what a long run needs: it
//! writes from a background thread that panics on an I/O error (a full disk aborts the
//! process) and cannot report the error to us, and several of its helpers (`add_text`) are
//! `unimplemented!()`. So the summaries are built here (text through the `text` plugin's
//! DT_STRING tensor, images with the right width and height), and records (length, masked
//! CRC-32C of the length, data, masked CRC-32C of the data, as TensorFlow's record format
//! defines them) are written synchronously. The first I/O error is kept and returned by
//! [`EventLog::flush`] / [`EventLog::close`], with the file's path.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::{
    Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Image, Summary_Value,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::masked_crc32c::masked_crc32c;

/// An event file that could not be written: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the TensorBoard event file {}", path.display())]
pub struct EventLogError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One event file in one folder.
pub struct EventLog {
    path: PathBuf,
    out: BufWriter<File>,
    /// The first write error; later writes are skipped.
    error: Option<std::io::Error>,
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventLog {
    /// Opens a new event file in `dir` (created if missing).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secs = wall_time() as u64;
        let path = dir.join(format!(
            "events.out.tfevents.{secs:010}.compress.{}",
            std::process::id()
        ));
        let mut log = Self {
            out: BufWriter::new(File::create(&path)?),
            path,
            error: None,
        };
        let mut version = Event::new();
        version.set_wall_time(wall_time());
        version.set_file_version("brain.Event:2".to_string());
        log.write_event(&version);
        log.flush().map_err(|e| e.source)?;
        Ok(log)
    }

    /// Fault injection for tests: from now on, records go to `path` (e.g. `/dev/full`, whose
    /// writes fail with "No space left on device"), as if the disk had filled up.
    pub fn redirect_writes(&mut self, path: &Path) -> std::io::Result<()> {
        self.out = BufWriter::new(File::options().write(true).open(path)?);
        Ok(())
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: usize) {
        let mut v = Summary_Value::new();
        v.set_tag(tag.to_string());
        v.set_simple_value(value as f32);
        self.add(v, step);
    }

    /// A text entry, rendered as Markdown in TensorBoard's Text tab.
    pub fn text(&mut self, tag: &str, markdown: &str, step: usize) {
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".to_string());
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(plugin);

        let mut dim = TensorShapeProto_Dim::new();
        dim.set_size(1);
        let mut shape = TensorShapeProto::new();
        shape.set_dim(RepeatedField::from_vec(vec![dim]));
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(shape);
        tensor.set_string_val(RepeatedField::from_vec(vec![markdown.as_bytes().to_vec()]));

        let mut v = Summary_Value::new();
        v.set_tag(tag.to_string());
        v.set_metadata(metadata);
        v.set_tensor(tensor);
        self.add(v, step);
    }

    /// A plugin's own summary (e.g. TensorBoard's HParams plugin): `content` is the plugin's
    /// serialised protobuf, carried in the value's metadata as TensorBoard's plugins write it.
    pub fn plugin(&mut self, tag: &str, plugin_name: &str, content: Vec<u8>, step: usize) {
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name(plugin_name.to_string());
        plugin.set_content(content);
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(plugin);
        // An empty float tensor: what TensorBoard's own writers attach to these values.
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_FLOAT);
        tensor.set_tensor_shape(TensorShapeProto::new());
        tensor.set_float_val(vec![0.0]);
        let mut v = Summary_Value::new();
        v.set_tag(tag.to_string());
        v.set_metadata(metadata);
        v.set_tensor(tensor);
        self.add(v, step);
    }

    /// An image from its encoded PNG bytes (`height` x `width`, RGB).
    pub fn image(&mut self, tag: &str, png: &[u8], height: u32, width: u32, step: usize) {
        let mut image = Summary_Image::new();
        image.set_height(height as i32);
        image.set_width(width as i32);
        image.set_colorspace(3);
        image.set_encoded_image_string(png.to_vec());
        let mut v = Summary_Value::new();
        v.set_tag(tag.to_string());
        v.set_image(image);
        self.add(v, step);
    }

    fn add(&mut self, value: Summary_Value, step: usize) {
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(vec![value]));
        let mut event = Event::new();
        event.set_wall_time(wall_time());
        event.set_step(step as i64);
        event.set_summary(summary);
        self.write_event(&event);
    }

    fn write_event(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        let result = event
            .write_to_bytes()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|data| {
                let len = (data.len() as u64).to_le_bytes();
                self.out.write_all(&len)?;
                self.out.write_all(&masked_crc32c(&len).to_le_bytes())?;
                self.out.write_all(&data)?;
                self.out.write_all(&masked_crc32c(&data).to_le_bytes())
            });
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    /// Pushes what is buffered to the file; the first error of any write so far, if one
    /// happened, with the file's path.
    pub fn flush(&mut self) -> Result<(), EventLogError> {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
        match self.error.take() {
            None => Ok(()),
            Some(source) => {
                // Keep failing: a log that lost events stays failed.
                self.error = Some(std::io::Error::new(source.kind(), source.to_string()));
                Err(EventLogError {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Writes everything buffered and closes the file.
    pub fn close(mut self) -> Result<(), EventLogError> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|source| EventLogError {
                path: self.path.clone(),
                source,
            })
    }
}

/// Removes the event files of `dir` (a resumed run rewrites its history into a fresh file so
/// TensorBoard never shows the steps of an interrupted epoch twice).
pub fn remove_event_files(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// One value read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub enum EventValue {
    Scalar(f32),
    Text(String),
    /// An image summary: its size and the encoded bytes' length.
    Image {
        width: i32,
        height: i32,
        bytes: usize,
    },
}

/// Reads every summary value of every event file in `dir`, in file order, checking each
/// record's length and data CRCs (masked CRC-32C, as TensorFlow's record format defines them).
pub fn read_events(dir: &Path) -> std::io::Result<Vec<(String, i64, EventValue)>> {
    let bad = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("events.out.tfevents."))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file)?;
        let mut at = 0;
        while at < bytes.len() {
            let header = bytes
                .get(at..at + 12)
                .ok_or_else(|| bad(format!("{}: truncated record header", file.display())))?;
            let len_bytes: [u8; 8] = header[..8].try_into().unwrap();
            let crc = u32::from_le_bytes(header[8..12].try_into().unwrap());
            if masked_crc32c(&len_bytes) != crc {
                return Err(bad(format!(
                    "{}: bad length CRC at byte {at}",
                    file.display()
                )));
            }
            let len = u64::from_le_bytes(len_bytes) as usize;
            let data = bytes
                .get(at + 12..at + 12 + len + 4)
                .ok_or_else(|| bad(format!("{}: truncated record", file.display())))?;
            let (data, crc) = data.split_at(len);
            if masked_crc32c(data) != u32::from_le_bytes(crc.try_into().unwrap()) {
                return Err(bad(format!(
                    "{}: bad data CRC at byte {at}",
                    file.display()
                )));
            }
            at += 12 + len + 4;
            let event = Event::parse_from_bytes(data)
                .map_err(|e| bad(format!("{}: bad event: {e}", file.display())))?;
            if !event.has_summary() {
                continue;
            }
            for v in event.get_summary().get_value() {
                let value = if v.has_simple_value() {
                    EventValue::Scalar(v.get_simple_value())
                } else if v.has_image() {
                    let image = v.get_image();
                    EventValue::Image {
                        width: image.get_width(),
                        height: image.get_height(),
                        bytes: image.get_encoded_image_string().len(),
                    }
                } else if v.has_tensor() {
                    let strings = v.get_tensor().get_string_val();
                    EventValue::Text(
                        strings
                            .first()
                            .map(|s| String::from_utf8_lossy(s).to_string())
                            .unwrap_or_default(),
                    )
                } else {
                    continue;
                };
                out.push((v.get_tag().to_string(), event.get_step(), value));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_text_read_back_with_valid_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::create(dir.path()).unwrap();
        for step in 0..100 {
            log.scalar("train/loss", 1.0 / (step + 1) as f64, step);
        }
        log.text("config", "seed = 1", 0);
        log.close().unwrap();
        let events = read_events(dir.path()).unwrap();
        assert_eq!(events.len(), 101);
        assert_eq!(
            events[99],
            ("train/loss".into(), 99, EventValue::Scalar(0.01))
        );
        assert_eq!(
            events[100],
            ("config".into(), 0, EventValue::Text("seed = 1".into()))
        );
    }

    #[test]
    fn a_full_disk_is_an_error_with_the_path_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::create(dir.path()).unwrap();
        log.scalar("x", 1.0, 0);
        log.flush().unwrap();
        log.redirect_writes(Path::new("/dev/full")).unwrap();
        for step in 0..10_000 {
            log.scalar("x", 1.0, step);
        }
        let err = log.flush().unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("events.out.tfevents."), "{err}");
        // It stays failed: events were lost.
        assert!(log.close().is_err());
    }

    #[test]
    fn a_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::create(dir.path()).unwrap();
        log.scalar("x", 1.0, 0);
        log.close().unwrap();
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&file).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        assert!(read_events(dir.path()).is_err());
    }
}
