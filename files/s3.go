package files

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

// openS3 opens an s3:// URL as s3blob's URL opener does (same query
// parameters: region, endpoint, use_path_style, disable_https, profile,
// anonymous, ssetype, kmskeyid, accelerate, ...; prefix), but with an HTTP
// client of its own, whose idle connections the returned function closes:
// a closed store keeps no connection open.
func openS3(ctx context.Context, u *url.URL) (*blob.Bucket, func(), error) {
	q := u.Query()
	prefix := q.Get("prefix")
	q.Del("prefix")
	var opts s3blob.Options
	s3opts := []func(*s3.Options){func(o *s3.Options) {
		// Objects uploaded in parts have no whole-object checksum to
		// validate; the SDK would log that on every read.
		o.DisableLogOutputChecksumValidationSkipped = true
	}}
	boolParam := func(names ...string) (bool, bool, error) {
		for _, name := range names {
			if v := q.Get(name); v != "" {
				q.Del(name)
				b, err := strconv.ParseBool(v)
				if err != nil {
					return false, false, &url.Error{Op: "parse", URL: name + "=" + v, Err: err}
				}
				return b, true, nil
			}
		}
		return false, false, nil
	}
	if v := q.Get("ssetype"); v != "" {
		q.Del("ssetype")
		for _, t := range types.ServerSideEncryptionAes256.Values() {
			if strings.EqualFold(string(t), v) {
				opts.EncryptionType = t
			}
		}
		if opts.EncryptionType == "" {
			return nil, nil, &url.Error{Op: "parse", URL: "ssetype=" + v, Err: errInvalidValue}
		}
	}
	if v := q.Get("kmskeyid"); v != "" {
		q.Del("kmskeyid")
		opts.KMSEncryptionID = v
	}
	if v, ok, err := boolParam("accelerate"); err != nil {
		return nil, nil, err
	} else if ok {
		s3opts = append(s3opts, func(o *s3.Options) { o.UseAccelerate = v })
	}
	if v, ok, err := boolParam("disable_https"); err != nil {
		return nil, nil, err
	} else if ok {
		s3opts = append(s3opts, func(o *s3.Options) { o.EndpointOptions.DisableHTTPS = v })
	}
	if v, ok, err := boolParam("use_path_style", "s3ForcePathStyle"); err != nil {
		return nil, nil, err
	} else if ok {
		s3opts = append(s3opts, func(o *s3.Options) { o.UsePathStyle = v })
	}
	cfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	cfg.HTTPClient = &http.Client{
		Transport: tr,
		// As the SDK's own client: a redirect is S3's answer, not a hop.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	opts.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	b, err := s3blob.OpenBucket(ctx, s3.NewFromConfig(cfg, s3opts...), u.Host, &opts)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, nil, err
	}
	if prefix != "" {
		b = blob.PrefixedBucket(b, prefix)
	}
	return b, tr.CloseIdleConnections, nil
}
