package server

import (
	"bytes"
	"context"
	"image/jpeg"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
)

// Products with several photos over the real gRPC API: a product written with its photos,
// one photo added and one removed without resending the others, kept photos read back,
// product-level results naming the matching photo, the ranking options, and refusals.
func TestServerProductsWithPhotos(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir(), SnapshotInterval: -1})
	defer s.shutdown()
	ctx := context.Background()
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		t.Helper()
		for _, p := range photos {
			if strings.HasSuffix(p.Path, "/"+name) {
				b, err := os.ReadFile(p.Path)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		t.Fatalf("no shared grocery photo %s", name)
		return nil
	}
	front, back := read("iconic__Oatly-Oat-Milk_Iconic.jpg"), read("train__Oatly-Oat-Milk_001.jpg")
	side := read("train__Oatly-Oat-Milk_002.jpg")
	milk := read("iconic__Arla-Standard-Milk_Iconic.jpg")

	res, err := s.client.Upsert(ctx, &pb.UpsertRequest{Id: "oatly", Category: "Oat-Milk", Attributes: map[string]string{"family": "oatly"},
		Photos: []*pb.PhotoInput{
			{Id: "front", Content: &pb.PhotoInput_Image{Image: front}},
			{Id: "back", Content: &pb.PhotoInput_Image{Image: back}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOutcome() != pb.Outcome_OUTCOME_CREATED || res.GetEmbedded() != 2 || len(res.GetPhotos()) != 2 {
		t.Fatalf("upsert with two photos: %+v", res)
	}
	if _, err := s.client.Upsert(ctx, &pb.UpsertRequest{Id: "milk", Category: "Milk", Attributes: map[string]string{"family": "arla"},
		Content: &pb.UpsertRequest_Image{Image: milk}}); err != nil {
		t.Fatal(err)
	}

	// Add "side", remove "back", keep "front" without sending it.
	res, err = s.client.Upsert(ctx, &pb.UpsertRequest{Id: "oatly", Category: "Oat-Milk", Attributes: map[string]string{"family": "oatly"},
		KeepOtherPhotos: true, RemovePhotos: []string{"back"},
		Photos: []*pb.PhotoInput{{Id: "side", Content: &pb.PhotoInput_Image{Image: side}}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOutcome() != pb.Outcome_OUTCOME_UPDATED || res.GetEmbedded() != 1 {
		t.Fatalf("partial photo update: %+v", res)
	}
	got, err := s.client.Get(ctx, &pb.GetRequest{Id: "oatly", IncludeVector: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ph := range got.GetProduct().GetPhotos() {
		ids = append(ids, ph.GetId())
		if len(ph.GetVector()) == 0 || !ph.GetKept() || len(ph.GetPhash()) != 16 {
			t.Errorf("photo %s: vector %d, kept %v, phash %q", ph.GetId(), len(ph.GetVector()), ph.GetKept(), ph.GetPhash())
		}
	}
	if strings.Join(ids, ",") != "front,side" {
		t.Errorf("photos after the partial update: %v, want front,side", ids)
	}

	kept, err := s.client.GetPhoto(ctx, &pb.GetPhotoRequest{Id: "oatly", PhotoId: "front"})
	if err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(bytes.NewReader(kept.GetImage()))
	if err != nil || kept.GetContentType() != "image/jpeg" {
		t.Fatalf("kept photo: %v, %q", err, kept.GetContentType())
	}
	if b := img.Bounds(); min(b.Dx(), b.Dy()) > 256 {
		t.Errorf("kept photo is %v, shorter side above the model's 256", b)
	}

	// A street photo of the product finds it, naming the photo that matched.
	sr, err := s.client.SearchByImage(ctx, &pb.SearchByImageRequest{Image: read("val__Oatly-Oat-Milk_001.jpg"), K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(sr.GetResults()) != 2 || sr.GetResults()[0].GetPhotoId() == "" {
		t.Errorf("search by image: %+v", sr.GetResults())
	}
	// More like this never returns the product; not_like removes the rejected one.
	byID, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(byID.GetResults()) != 1 || byID.GetResults()[0].GetProduct().GetId() != "milk" {
		t.Errorf("more like this: %+v", byID.GetResults())
	}
	notLike, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5, NotLike: []string{"milk"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(notLike.GetResults()) != 0 {
		t.Errorf("not_like the only other product still returned %+v", notLike.GetResults())
	}

	refusals := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"image and photos together", func() error {
			_, err := s.client.Upsert(ctx, &pb.UpsertRequest{Id: "x", Content: &pb.UpsertRequest_Image{Image: milk},
				Photos: []*pb.PhotoInput{{Content: &pb.PhotoInput_Image{Image: front}}}})
			return err
		}, codes.InvalidArgument},
		{"photo id with a slash", func() error {
			_, err := s.client.Upsert(ctx, &pb.UpsertRequest{Id: "x", Photos: []*pb.PhotoInput{{Id: "a/b", Content: &pb.PhotoInput_Image{Image: front}}}})
			return err
		}, codes.InvalidArgument},
		{"keep a photo that is not stored", func() error {
			_, err := s.client.Upsert(ctx, &pb.UpsertRequest{Id: "oatly", KeepOtherPhotos: true, Photos: []*pb.PhotoInput{{Id: "nope"}}})
			return err
		}, codes.NotFound},
		{"unknown kept photo", func() error {
			_, err := s.client.GetPhoto(ctx, &pb.GetPhotoRequest{Id: "oatly", PhotoId: "back"})
			return err
		}, codes.NotFound},
		{"diversity above 1", func() error {
			_, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5, Diversity: 1.5})
			return err
		}, codes.InvalidArgument},
		{"query expansion over 50 photos", func() error {
			_, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5, Expand: 51})
			return err
		}, codes.InvalidArgument},
		{"a boost above 1", func() error {
			_, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5, Boosts: []*pb.Boost{{Attribute: "kind", Value: "pack", Add: 2}}})
			return err
		}, codes.InvalidArgument},
		{"a boost of no attribute", func() error {
			_, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5, Boosts: []*pb.Boost{{Value: "pack", Add: 0.1}}})
			return err
		}, codes.InvalidArgument},
		{"query expansion with a negative power", func() error {
			_, err := s.client.SearchById(ctx, &pb.SearchByIdRequest{Id: "oatly", K: 5, Expand: 2, ExpandAlpha: -1})
			return err
		}, codes.InvalidArgument},
	}
	for _, r := range refusals {
		if got := codeOfErr(r.call()); got != r.code {
			t.Errorf("%s: %v, want %v", r.name, got, r.code)
		}
	}
	// The refusals changed nothing.
	after, err := s.client.Get(ctx, &pb.GetRequest{Id: "oatly"})
	if err != nil || len(after.GetProduct().GetPhotos()) != 2 {
		t.Errorf("product after the refusals: %v, %v", after, err)
	}
}
