package assets

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/image"
)

// Image is a root filesystem manifest.
type Image struct {
	Source string        `json:"source"`
	Rootfs Digest        `json:"rootfs"`
	Recipe *image.Recipe `json:"recipe,omitempty"`
	// Config holds a container image's run defaults; `firegopher run` flags override them.
	Config *ImageConfig `json:"config,omitempty"`
}

// ImageConfig is the part of an OCI image config that says how to run it.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// LoadImage reads an image manifest and checks that its root filesystem is stored.
func (s *Store) LoadImage(d Digest) (*Image, error) {
	var im Image
	if err := s.GetJSON(d, &im); err != nil {
		return nil, err
	}
	if !s.Has(im.Rootfs) {
		return nil, fmt.Errorf("image %s: rootfs %s: %w", d.Short(), im.Rootfs.Short(), ErrNotFound)
	}
	return &im, nil
}

// DefaultImage returns the default image (the default recipe), bootstrapping it on first use.
func (s *Store) DefaultImage(ctx context.Context, log *slog.Logger) (Digest, *Image, error) {
	return s.RecipeImage(ctx, "default", image.DefaultRecipe(), log)
}

// RecipeImage returns the image named name, bootstrapping it from r on first use.
func (s *Store) RecipeImage(ctx context.Context, name string, r image.Recipe, log *slog.Logger) (Digest, *Image, error) {
	if err := r.Validate(); err != nil {
		return "", nil, err
	}
	return buildOnce(ctx, s, "image/"+name, s.LoadImage, func() (Digest, *Image, error) {
		return s.buildRecipeImage(ctx, name, r, log)
	})
}

// buildRecipeImage bootstraps r into a root filesystem and stores it, untagged.
func (s *Store) buildRecipeImage(ctx context.Context, name string, r image.Recipe, log *slog.Logger) (Digest, *Image, error) {
	log.Info("building root filesystem "+name+" (first use only, about a minute)", "suite", r.Suite, "packages", r.Packages)
	tmp, err := s.TempDir("image-*")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "rootfs.ext4")
	if err := image.Build(ctx, r, tmp, out, log); err != nil {
		return "", nil, err
	}
	rootfs, err := s.Adopt(out)
	if err != nil {
		return "", nil, err
	}
	im := &Image{Source: "recipe:" + r.Key(), Rootfs: rootfs, Recipe: &r}
	d, err := s.PutJSON(im)
	if err != nil {
		return "", nil, err
	}
	log.Info("root filesystem "+name+" ready", "digest", rootfs.Short())
	return d, im, nil
}
