package embed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/bmp"
	"golang.org/x/image/webp"
)

// Limits bound what Decode accepts; both are checked before any pixel memory is allocated.
type Limits struct {
	// MaxBytes is the largest encoded input accepted.
	MaxBytes int64
	// MaxPixels is the largest width*height accepted, as declared in the image header.
	MaxPixels int64
}

// DefaultLimits accepts a 20 MiB file of up to 40 megapixels (a full-size phone photo).
func DefaultLimits() Limits {
	return Limits{MaxBytes: 20 << 20, MaxPixels: 40_000_000}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxPixels <= 0 {
		l.MaxPixels = d.MaxPixels
	}
	return l
}

// Image formats Decode recognises.
const (
	FormatJPEG = "jpeg"
	FormatPNG  = "png"
	FormatGIF  = "gif"
	FormatWebP = "webp"
	FormatBMP  = "bmp"
)

// supportedFormats is how error messages name what Decode reads.
const supportedFormats = "JPEG, PNG, GIF, WebP, BMP"

// DecodeOptions tune Decode.
type DecodeOptions struct {
	// Limits bound the input; zero fields take DefaultLimits.
	Limits Limits
	// MinShortSide, when positive, lets a JPEG be decoded at a reduced DCT scale
	// (1/2, 1/4, 1/8 ...) as long as its shorter side stays at least this long. Only
	// libjpeg-turbo scales; the pure-Go decoder always decodes at full size.
	MinShortSide int
	// PureGo decodes JPEGs with the standard library even when libjpeg-turbo is available.
	PureGo bool
}

// Decoded is a decoded image as stored in the file, with the EXIF orientation that says
// how to display it.
type Decoded struct {
	// Image holds the pixels, possibly at reduced scale (see Scale), not yet oriented.
	Image image.Image
	// Format is FormatJPEG, FormatPNG, FormatGIF, FormatWebP or FormatBMP.
	Format string
	// Width and Height are the full stored size from the header.
	Width, Height int
	// Orientation is the EXIF orientation, 1 (upright) to 8; 1 for non-JPEG images.
	Orientation int
	// ScaleDenom is how much the decoder shrank the image: 1 for full size, 2 for half...
	// (approximately, for non-power-of-two DCT scales: Width/Image.Bounds().Dx()).
	ScaleDenom float64
	// Decoder names the decoder used: "libjpeg-turbo" or "go".
	Decoder string
}

// Upright returns the image turned the way its EXIF orientation says it should be shown.
func (d Decoded) Upright() image.Image {
	if o := d.orientation(); o != 1 {
		return orient(toRGBA(d.Image), o)
	}
	return d.Image
}

// orientation is the EXIF orientation, with a value outside 1..8 (a hand-built Decoded)
// read as upright.
func (d Decoded) orientation() int {
	if d.Orientation < 1 || d.Orientation > 8 {
		return 1
	}
	return d.Orientation
}

// checkPixels refuses a Decoded with no pixels to preprocess; Decode never returns one, but
// a hand-built Decoded may be.
func (d Decoded) checkPixels() error {
	if d.Image == nil {
		return fmt.Errorf("embed: preprocess: no image")
	}
	if d.Image.Bounds().Empty() {
		return fmt.Errorf("%w: empty image", ErrCorrupt)
	}
	return nil
}

// sniffFormat recognises an image format by its magic bytes.
func sniffFormat(data []byte) (string, error) {
	switch {
	case len(data) == 0:
		return "", fmt.Errorf("%w: no data (0 bytes)", ErrUnsupportedFormat)
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF}):
		return FormatJPEG, nil
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return FormatPNG, nil
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return FormatGIF, nil
	case len(data) >= 12 && bytes.Equal(data[:4], []byte("RIFF")) && bytes.Equal(data[8:12], []byte("WEBP")):
		return FormatWebP, nil
	case bytes.HasPrefix(data, []byte("BM")):
		return FormatBMP, nil
	}
	return "", fmt.Errorf("%w: %s", ErrUnsupportedFormat, describeUnknown(data))
}

// describeUnknown names common formats we do not decode, to make the error useful.
func describeUnknown(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte("II*\x00")), bytes.HasPrefix(data, []byte("MM\x00*")):
		return "TIFF is not supported (" + supportedFormats + " are)"
	case len(data) >= 12 && bytes.Equal(data[4:8], []byte("ftyp")):
		return "HEIF/AVIF is not supported (" + supportedFormats + " are)"
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8}):
		return "truncated JPEG start of image"
	}
	n := min(len(data), 8)
	return fmt.Sprintf("unrecognised header % x (%s are supported)", data[:n], supportedFormats)
}

// DecodeConfig reads only the header: the format and the stored size. It checks the byte
// limit but not the pixel limit.
func DecodeConfig(data []byte, lim Limits) (format string, width, height int, err error) {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxBytes {
		return "", 0, 0, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrTooLarge, len(data), lim.MaxBytes)
	}
	format, err = sniffFormat(data)
	if err != nil {
		return "", 0, 0, err
	}
	var cfg image.Config
	r := bytes.NewReader(data)
	switch format {
	case FormatJPEG:
		cfg, err = jpeg.DecodeConfig(r)
	case FormatPNG:
		cfg, err = png.DecodeConfig(r)
	case FormatGIF:
		cfg, err = gif.DecodeConfig(r)
	case FormatWebP:
		cfg, err = webp.DecodeConfig(r)
	case FormatBMP:
		cfg, err = bmp.DecodeConfig(r)
		if errors.Is(err, bmp.ErrUnsupported) {
			// A well-formed header for a kind of BMP x/image does not read (RLE or
			// bit-field compression, 16-bit pixels, OS/2 headers): refused as a format, so a
			// caller can tell the sender to convert it rather than that the file is damaged.
			return format, 0, 0, fmt.Errorf("%w: this BMP variant (only uncompressed 1, 2, 4, 8, 24 and 32-bit BMPs are read): %w",
				ErrUnsupportedFormat, err)
		}
	}
	if err != nil {
		return format, 0, 0, fmt.Errorf("%w: %s header: %w", ErrCorrupt, format, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return format, 0, 0, fmt.Errorf("%w: %s header declares %dx%d pixels", ErrCorrupt, format, cfg.Width, cfg.Height)
	}
	return format, cfg.Width, cfg.Height, nil
}

// Decode checks the limits against the header, then decodes the image (the first frame of
// a GIF). Errors wrap ErrUnsupportedFormat, ErrCorrupt or ErrTooLarge; it never panics.
func Decode(data []byte, opt DecodeOptions) (dec Decoded, err error) {
	defer func() {
		// The decoders are not supposed to panic; if one does on hostile input, the input is
		// corrupt, and the process must survive it.
		if r := recover(); r != nil {
			dec, err = Decoded{}, fmt.Errorf("%w: decoder panic: %v", ErrCorrupt, r)
		}
	}()
	lim := opt.Limits.withDefaults()
	format, w, h, err := DecodeConfig(data, lim)
	if err != nil {
		return Decoded{}, err
	}
	if px := int64(w) * int64(h); px > lim.MaxPixels {
		return Decoded{}, fmt.Errorf("%w: %s header declares %dx%d = %d pixels, over the %d pixel limit",
			ErrTooLarge, format, w, h, px, lim.MaxPixels)
	}
	if format == FormatBMP {
		// BMP pixels are stored uncompressed, so a file too short for the pixels its header
		// declares is known to be truncated before x/image allocates the whole image for it
		// (160 MB for a 60-byte file declaring the pixel limit).
		if need := bmpFileSize(data, w, h); int64(len(data)) < need {
			return Decoded{}, fmt.Errorf("%w: bmp: %dx%d pixels need %d bytes, the file has %d: %w",
				ErrCorrupt, w, h, need, len(data), errTruncated)
		}
	}
	dec = Decoded{Format: format, Width: w, Height: h, Orientation: 1, ScaleDenom: 1, Decoder: "go"}
	var img image.Image
	r := bytes.NewReader(data)
	switch format {
	case FormatJPEG:
		dec.Orientation = jpegOrientation(data)
		// The package needs cgo anyway (ONNX Runtime), so libjpeg-turbo is always linked;
		// PureGo keeps the standard-library path selectable and tested.
		if !opt.PureGo {
			if timg, denom, ok, terr := turboDecode(data, w, h, opt.MinShortSide); ok {
				if terr != nil {
					return Decoded{}, terr
				}
				dec.Image, dec.ScaleDenom, dec.Decoder = timg, denom, "libjpeg-turbo"
				return dec, nil
			}
		}
		img, err = jpeg.Decode(r)
	case FormatPNG:
		img, err = png.Decode(r)
	case FormatGIF:
		img, err = gif.Decode(r)
	case FormatWebP:
		img, err = webp.Decode(r)
	case FormatBMP:
		img, err = bmp.Decode(r)
		if err == nil {
			opaqueIfNoAlpha(img)
		}
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Decoded{}, fmt.Errorf("%w: %s: %w", ErrCorrupt, format, err)
	}
	if b := img.Bounds(); b.Dx() <= 0 || b.Dy() <= 0 {
		return Decoded{}, fmt.Errorf("%w: %s decoded to an empty image", ErrCorrupt, format)
	}
	dec.Image = img
	return dec, nil
}

// bmpFileSize is the length a BMP whose header DecodeConfig accepted must have: the pixel
// data offset plus the rows, each padded to 4 bytes.
func bmpFileSize(data []byte, w, h int) int64 {
	offset := int64(binary.LittleEndian.Uint32(data[10:14]))
	bpp := int64(binary.LittleEndian.Uint16(data[28:30]))
	row := (int64(w)*bpp + 31) / 32 * 4
	return offset + row*int64(h)
}

// opaqueIfNoAlpha makes a 32-bit BMP whose alpha bytes are all zero opaque. x/image honours
// the alpha of BMPs with a V4 or V5 header, but many writers leave those bytes zero, meaning
// no alpha at all; composited over white, such a photo would reach the model blank. Browsers
// read such files as opaque too.
func opaqueIfNoAlpha(img image.Image) {
	m, ok := img.(*image.NRGBA)
	if !ok {
		return
	}
	b := m.Rect
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row := m.Pix[m.PixOffset(b.Min.X, y):m.PixOffset(b.Max.X, y)]
		for i := 3; i < len(row); i += 4 {
			if row[i] != 0 {
				return
			}
		}
	}
	for i := 3; i < len(m.Pix); i += 4 {
		m.Pix[i] = 0xFF
	}
}
