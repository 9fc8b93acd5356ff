package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Limits on listing.
const (
	// MaxPageSize bounds ListOptions.Limit.
	MaxPageSize = 1000
	// DefaultPageSize is the page size of a ListOptions.Limit of 0.
	DefaultPageSize = 50
)

// ListOptions says which page of products List returns.
type ListOptions struct {
	// Filter says which products are listed (ExcludeIDs too).
	Filter Filter
	// After is the id of the last product of the previous page; empty starts at the first.
	After string
	// Limit is the page size, 1..MaxPageSize; 0 means DefaultPageSize.
	Limit int
}

// Page is one page of products in id order.
type Page struct {
	// Products are the page's products (photos without vectors), in id order.
	Products []Product
	// More tells whether products come after the last one of this page.
	More bool
	// Total counts the products inside the filter, over all pages.
	Total int
}

// List returns one page of the products inside opt.Filter, in id order (byte order of the
// ids), starting after opt.After. Ids name positions, so paging on while products are
// written neither repeats nor skips the ones that stay.
func (c *Catalog) List(ctx context.Context, opt ListOptions) (Page, error) {
	limit := opt.Limit
	if limit == 0 {
		limit = DefaultPageSize
	}
	if limit < 1 || limit > MaxPageSize {
		return Page{}, fmt.Errorf("%w: page size is %d, must be 1..%d", ErrInvalidArgument, opt.Limit, MaxPageSize)
	}
	if err := c.enter(); err != nil {
		return Page{}, err
	}
	defer c.life.RUnlock()
	a := c.compileFilter(opt.Filter)
	var page Page
	var after []*entry
	c.metaMu.RLock()
	for id, e := range c.byID {
		if !a.entryOK(e) {
			continue
		}
		page.Total++
		if id > opt.After {
			after = append(after, e)
		}
	}
	c.metaMu.RUnlock()
	// A full sort of what follows the cursor: the table is a map, and a page costs a scan
	// of it either way (tens of milliseconds at a hundred thousand products).
	slices.SortFunc(after, func(x, y *entry) int { return strings.Compare(x.id, y.id) })
	if len(after) > limit {
		after, page.More = after[:limit], true
	}
	page.Products = make([]Product, len(after))
	for i, e := range after {
		page.Products[i] = e.product()
	}
	return page, ctx.Err()
}
