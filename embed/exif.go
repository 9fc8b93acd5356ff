package embed

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/draw"
)

// jpegOrientation returns the EXIF orientation (1..8) from a JPEG's APP1 segment, or 1 when
// there is none or it cannot be read. It walks only the marker segments before the first
// scan, so its cost does not grow with the image.
func jpegOrientation(data []byte) int {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 1
	}
	pos := 2
	for pos+4 <= len(data) {
		if data[pos] != 0xFF {
			return 1
		}
		marker := data[pos+1]
		if marker == 0xFF { // fill byte
			pos++
			continue
		}
		if marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01 { // no length
			pos += 2
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image: no EXIF before it
			return 1
		}
		n := int(binary.BigEndian.Uint16(data[pos+2:]))
		if n < 2 || pos+2+n > len(data) {
			return 1
		}
		seg := data[pos+4 : pos+2+n]
		if marker == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			return exifOrientation(seg[6:])
		}
		pos += 2 + n
	}
	return 1
}

// exifOrientation reads tag 0x0112 from IFD0 of a TIFF-structured EXIF block.
func exifOrientation(tiff []byte) int {
	if len(tiff) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(tiff[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(tiff[2:]) != 42 {
		return 1
	}
	ifd := int64(bo.Uint32(tiff[4:]))
	if ifd < 8 || ifd+2 > int64(len(tiff)) {
		return 1
	}
	count := int64(bo.Uint16(tiff[ifd:]))
	for i := int64(0); i < count; i++ {
		e := ifd + 2 + 12*i
		if e+12 > int64(len(tiff)) {
			return 1
		}
		if bo.Uint16(tiff[e:]) != 0x0112 {
			continue
		}
		typ, n := bo.Uint16(tiff[e+2:]), bo.Uint32(tiff[e+4:])
		if typ != 3 || n != 1 { // SHORT, one value, stored inline
			return 1
		}
		if o := int(bo.Uint16(tiff[e+8:])); o >= 1 && o <= 8 {
			return o
		}
		return 1
	}
	return 1
}

// toRGBA returns img as an *image.RGBA with its origin at (0,0), copying only when needed.
func toRGBA(img image.Image) *image.RGBA {
	if r, ok := img.(*image.RGBA); ok && r.Rect.Min == (image.Point{}) {
		return r
	}
	b := img.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(dst, dst.Rect, img, b.Min, draw.Src)
	return dst
}

// orientedSize is the displayed size of a w x h stored image.
func orientedSize(w, h, orientation int) (int, int) {
	if orientation >= 5 && orientation <= 8 {
		return h, w
	}
	return w, h
}

// orient turns a stored image into its displayed orientation (EXIF 1..8).
func orient(src *image.RGBA, orientation int) *image.RGBA {
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := orientedSize(sw, sh, orientation)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	orientInto(dst, src, orientation)
	return dst
}

// orientInto writes src, turned by the EXIF orientation, into dst, whose size must be the
// oriented size of src. Both must have their origin at (0,0).
func orientInto(dst, src *image.RGBA, orientation int) {
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	for y := 0; y < dh; y++ {
		row := dst.Pix[y*dst.Stride : y*dst.Stride+4*dw]
		for x := 0; x < dw; x++ {
			sx, sy := storedAt(orientation, x, y, sw, sh)
			o := sy*src.Stride + 4*sx
			copy(row[4*x:4*x+4], src.Pix[o:o+4])
		}
	}
}

// storedAt is the pixel of a sw x sh stored image that shows at (x, y) once the image is
// turned by the EXIF orientation. orientInto and the perceptual hash's 32x32 grid share it,
// so that the two cannot disagree about a turn.
func storedAt(orientation, x, y, sw, sh int) (sx, sy int) {
	switch orientation {
	case 2: // mirrored left-right
		return sw - 1 - x, y
	case 3: // turned 180
		return sw - 1 - x, sh - 1 - y
	case 4: // mirrored top-bottom
		return x, sh - 1 - y
	case 5: // transposed
		return y, x
	case 6: // must turn 90 clockwise to show
		return y, sh - 1 - x
	case 7: // transversed
		return sw - 1 - y, sh - 1 - x
	case 8: // must turn 90 anticlockwise to show
		return sw - 1 - y, x
	default:
		return x, y
	}
}
