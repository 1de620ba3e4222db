//! Branding: product name, logo and colours, validated once at start. Colours reach the pages only through the
//! generated `/static/brand.css` (CSS custom properties), since the pages allow no inline style.

use super::PagesError;
use crate::config::BrandingConfig;
use actix_web::web::Bytes;
use std::path::Path;

/// Product name when the configuration names none.
pub const DEFAULT_PRODUCT_NAME: &str = "idp";
/// Accent colour when the configuration names none (contrast 6.7:1 on white).
const DEFAULT_PRIMARY: Rgb = Rgb(0x1d, 0x4e, 0xd8);
/// Page background when the configuration names none.
const DEFAULT_BACKGROUND: Rgb = Rgb(0xf3, 0xf4, 0xf6);
/// Text colour of the cards, and of anything drawn on a light colour.
const DARK_TEXT: Rgb = Rgb(0x11, 0x18, 0x27);
const WHITE: Rgb = Rgb(0xff, 0xff, 0xff);
/// WCAG 2 minimum contrast for normal text (success criterion 1.4.3).
const MIN_TEXT_CONTRAST: f64 = 4.5;
/// Largest logo accepted: it is held in memory and served by every node.
const MAX_LOGO_BYTES: u64 = 1024 * 1024;

/// The validated branding of the pages.
#[derive(Clone, Debug)]
pub(super) struct Brand {
    pub product_name: String,
    /// Body of `/static/brand.css`.
    pub css: Bytes,
    pub logo_opt: Option<Logo>,
}

/// The logo file, read at start.
#[derive(Clone, Debug)]
pub(super) struct Logo {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

impl Brand {
    pub fn from_config(branding: &BrandingConfig) -> Result<Self, PagesError> {
        let product_name = match &branding.product_name {
            None => DEFAULT_PRODUCT_NAME.to_owned(),
            Some(name) if name.trim().is_empty() => {
                return Err(PagesError::Branding { key: "product_name", reason: "must not be empty".into() })
            }
            Some(name) => name.trim().to_owned(),
        };
        let primary =
            parse_config_color("primary_color", branding.primary_color.as_deref())?.unwrap_or(DEFAULT_PRIMARY);
        let background =
            parse_config_color("background_color", branding.background_color.as_deref())?.unwrap_or(DEFAULT_BACKGROUND);
        let logo_opt = branding.logo.as_deref().map(load_logo).transpose()?;
        Ok(Self { product_name, css: Bytes::from(brand_css(primary, background)), logo_opt })
    }
}

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rgb(u8, u8, u8);

impl Rgb {
    /// Parses `#rgb` or `#rrggbb` (hex digits only, nothing around them).
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix('#')?;
        if !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        let channel = |start: usize, len: usize| u8::from_str_radix(&digits[start..start + len], 16).ok();
        match digits.len() {
            3 => Some(Self(channel(0, 1)? * 17, channel(1, 1)? * 17, channel(2, 1)? * 17)),
            6 => Some(Self(channel(0, 2)?, channel(2, 2)?, channel(4, 2)?)),
            _ => None,
        }
    }

    /// Relative luminance (WCAG 2).
    fn luminance(self) -> f64 {
        let linear = |channel: u8| {
            let value = f64::from(channel) / 255.0;
            if value <= 0.039_28 {
                value / 12.92
            } else {
                ((value + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * linear(self.0) + 0.7152 * linear(self.1) + 0.0722 * linear(self.2)
    }

    /// Contrast ratio between two colours, from 1 to 21 (WCAG 2).
    fn contrast(self, other: Rgb) -> f64 {
        let (lighter, darker) = {
            let (first, second) = (self.luminance(), other.luminance());
            (first.max(second), first.min(second))
        };
        (lighter + 0.05) / (darker + 0.05)
    }

    /// Whichever of white and dark text reads better on this colour.
    fn readable_text(self) -> Rgb {
        if self.contrast(WHITE) >= self.contrast(DARK_TEXT) {
            WHITE
        } else {
            DARK_TEXT
        }
    }
}

impl std::fmt::Display for Rgb {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

fn parse_config_color(key: &'static str, text_opt: Option<&str>) -> Result<Option<Rgb>, PagesError> {
    let Some(text) = text_opt else {
        return Ok(None);
    };
    Rgb::parse(text).map(Some).ok_or_else(|| PagesError::Branding {
        key,
        reason: format!("invalid colour {text:?} (expected #rgb or #rrggbb)"),
    })
}

/// The stylesheet of the branding colours. Text colours are chosen for contrast: links and focus rings use the
/// accent colour only when it is readable on the white cards.
pub(super) fn brand_css(primary: Rgb, background: Rgb) -> String {
    let link = if primary.contrast(WHITE) >= MIN_TEXT_CONTRAST { primary } else { DARK_TEXT };
    format!(
        ":root {{\n  --brand-primary: {primary};\n  --brand-on-primary: {on_primary};\n  --brand-link: {link};\n  \
         --brand-background: {background};\n  --brand-on-background: {on_background};\n}}\n",
        on_primary = primary.readable_text(),
        on_background = background.readable_text(),
    )
}

/// Content type of a logo, from its file extension.
pub(super) fn logo_content_type(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "png" => Some("image/png"),
        "svg" => Some("image/svg+xml"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

fn load_logo(path: &Path) -> Result<Logo, PagesError> {
    let logo_error =
        |reason: String| PagesError::Branding { key: "logo", reason: format!("{}: {reason}", path.display()) };
    let content_type = logo_content_type(path)
        .ok_or_else(|| logo_error("unsupported file type (expected .png, .svg, .jpg, .jpeg or .webp)".into()))?;
    let size = std::fs::metadata(path).map_err(|error| logo_error(error.to_string()))?.len();
    if size > MAX_LOGO_BYTES {
        return Err(logo_error(format!("{size} bytes, larger than the {MAX_LOGO_BYTES} bytes accepted")));
    }
    let bytes = std::fs::read(path).map_err(|error| logo_error(error.to_string()))?;
    Ok(Logo { content_type, bytes: Bytes::from(bytes) })
}
