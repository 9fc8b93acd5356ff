package main

import (
	"context"
	"io"
	"os"

	"golang.org/x/term"

	lookalikev1 "lookalike/proto/lookalike/v1"
)

func runPhoto(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "photo", "[flags] ID PHOTO_ID",
		"Write the kept copy of a product's photo (a JPEG as the model sees it) to --out or stdout. "+
			"The photo ids are in 'lookalike get ID'.")
	var cf clientFlags
	cf.register(fs, a)
	out := fs.String("out", "", "write the JPEG to this file instead of stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want ID and PHOTO_ID, got %d arguments", fs.NArg())
	}
	if *out == "" {
		if f, ok := a.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return usagef("stdout is a terminal: redirect it (> photo.jpg) or use --out")
		}
	}
	resp, err := callOnce(ctx, &cf, func(ctx context.Context, c lookalikev1.LookalikeClient) (*lookalikev1.GetPhotoResponse, error) {
		return c.GetPhoto(ctx, &lookalikev1.GetPhotoRequest{Id: fs.Arg(0), PhotoId: fs.Arg(1)})
	})
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := a.stdout.Write(resp.GetImage())
		return err
	}
	return writeFileAtomically(*out, func(w io.Writer) error {
		_, err := w.Write(resp.GetImage())
		return err
	})
}
