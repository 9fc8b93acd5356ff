/* cmyk_jpeg.c writes cmyk.jpg: a 64x48 four-channel JPEG with an Adobe marker, stored the
 * way Photoshop stores CMYK (inverted: 255 = no ink). Left half red (M+Y), right half blue
 * (C+M). Build and run from embed/testdata:
 *   gcc -O2 -o /tmp/cmyk_jpeg gen/cmyk_jpeg.c -ljpeg && /tmp/cmyk_jpeg cmyk.jpg
 */
#include <stdio.h>
#include <jpeglib.h>

int main(int argc, char **argv) {
	struct jpeg_compress_struct c;
	struct jpeg_error_mgr err;
	FILE *f = fopen(argc > 1 ? argv[1] : "cmyk.jpg", "wb");
	if (!f) return 1;
	c.err = jpeg_std_error(&err);
	jpeg_create_compress(&c);
	jpeg_stdio_dest(&c, f);
	c.image_width = 64;
	c.image_height = 48;
	c.input_components = 4;
	c.in_color_space = JCS_CMYK;
	jpeg_set_defaults(&c);
	jpeg_set_colorspace(&c, JCS_CMYK); /* writes the Adobe marker, transform 0 */
	jpeg_set_quality(&c, 95, TRUE);
	jpeg_start_compress(&c, TRUE);
	unsigned char row[64 * 4];
	for (int x = 0; x < 64; x++) {
		unsigned char *p = row + 4 * x;
		int red = x < 32;
		p[0] = red ? 255 : 0; /* C: none for red, full for blue (inverted) */
		p[1] = 0;             /* M: full */
		p[2] = red ? 0 : 255; /* Y: full for red, none for blue */
		p[3] = 255;           /* K: none */
	}
	while (c.next_scanline < c.image_height) {
		JSAMPROW r = row;
		jpeg_write_scanlines(&c, &r, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	fclose(f);
	return 0;
}
