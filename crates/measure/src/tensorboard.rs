//! TensorBoard event files, written through `tensorboard-rs` behind this one small type.
//!
//! The crate's scalar path is sound; its `add_text` (and several other methods) are
//! `unimplemented!()` and panic, so text goes through its public `FileWriter::add_summary` with
//! a summary we build ourselves (the `text` plugin reads a DT_STRING tensor). Its writes go
//! through a background thread that only finishes on drop: [`EventLog::close`] (or dropping
//! the log) must happen before the process exits, or events are lost.

use std::path::{Path, PathBuf};

use protobuf::RepeatedField;
use tensorboard_proto::summary::{
    Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Image, Summary_Value,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary_writer::FileWriter;

/// One event file in one folder. Only one `EventLog` may write a folder at a time: the crate
/// names files by second and pid, so two writers started in the same second collide.
pub struct EventLog {
    writer: Option<FileWriter>,
}

impl EventLog {
    /// Opens a new event file in `dir` (created if missing).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        // The crate `expect`s on directory creation; create it first so errors are ours.
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            writer: Some(FileWriter::new(dir)),
        })
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

    /// An image from its encoded PNG bytes (`height` x `width`, RGB). Written as an image
    /// summary of our own: the crate's `add_image` swaps width and height.
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
        if let Some(writer) = self.writer.as_mut() {
            writer.add_summary(summary, step);
        }
    }

    /// Writes everything queued and closes the file (joins the writer thread).
    pub fn close(mut self) {
        self.writer.take();
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
    use protobuf::Message;
    use tensorboard_proto::event::Event;
    use tensorboard_rs::masked_crc32c::masked_crc32c;

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
        log.close();
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
    fn a_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::create(dir.path()).unwrap();
        log.scalar("x", 1.0, 0);
        log.close();
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
