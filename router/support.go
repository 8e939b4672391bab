package router

import (
	"fmt"

	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// supportedFields lists, per message, the fields Compile implements. A field
// set in the configuration but missing here is rejected with
// "<path>: not supported yet", so a feature we have not built fails loudly
// instead of being silently ignored; this also covers fields added to the API
// after this table was written.
//
// A name prefixed with "-" is accepted and ignored: it only decorates the
// route (metadata, decorators, stats prefixes) and changes no traffic.
// Messages not listed here (durations, wrappers, Any, ranges) are leaves and
// are not walked.
var supportedFields = map[string]string{
	"envoy.config.route.v3.RouteConfiguration": `name virtual_hosts
		request_headers_to_add request_headers_to_remove
		response_headers_to_add response_headers_to_remove
		most_specific_header_mutations_wins typed_per_filter_config
		max_direct_response_body_size_bytes ignore_port_in_host_matching
		validate_clusters request_mirror_policies -metadata`,
	"envoy.config.route.v3.VirtualHost": `name domains routes
		request_headers_to_add request_headers_to_remove
		response_headers_to_add response_headers_to_remove
		typed_per_filter_config retry_policy request_mirror_policies -metadata
		include_request_attempt_count include_attempt_count_in_response require_tls`,
	"envoy.config.route.v3.Route": `name match route redirect direct_response
		request_headers_to_add request_headers_to_remove
		response_headers_to_add response_headers_to_remove
		typed_per_filter_config -metadata -decorator -stat_prefix`,
	"envoy.config.route.v3.RouteMatch": `prefix path safe_regex
		path_separated_prefix case_sensitive headers query_parameters runtime_fraction`,
	"envoy.config.core.v3.RuntimeFractionalPercent": `default_value runtime_key`,
	"envoy.config.route.v3.HeaderMatcher": `name exact_match safe_regex_match
		range_match present_match prefix_match suffix_match contains_match
		string_match invert_match treat_missing_header_as_empty`,
	"envoy.config.route.v3.QueryParameterMatcher":   `name string_match present_match`,
	"envoy.type.matcher.v3.StringMatcher":           `exact prefix suffix safe_regex contains ignore_case`,
	"envoy.type.matcher.v3.RegexMatcher":            `regex -google_re2`,
	"envoy.type.matcher.v3.RegexMatchAndSubstitute": `pattern substitution`,
	"envoy.config.route.v3.RouteAction": `cluster weighted_clusters
		cluster_not_found_response_code prefix_rewrite regex_rewrite
		host_rewrite_literal auto_host_rewrite append_x_forwarded_host
		timeout idle_timeout retry_policy request_mirror_policies
		max_grpc_timeout grpc_timeout_offset max_stream_duration`,
	"envoy.config.route.v3.RouteAction.MaxStreamDuration": `max_stream_duration
		grpc_timeout_header_max grpc_timeout_header_offset`,
	"envoy.config.route.v3.RouteAction.RequestMirrorPolicy": `cluster cluster_header
		runtime_fraction trace_sampled disable_shadow_host_suffix_append
		host_rewrite_literal`,
	"envoy.config.route.v3.WeightedCluster":               `clusters total_weight`,
	"envoy.config.route.v3.WeightedCluster.ClusterWeight": `name weight`,
	"envoy.config.route.v3.RetryPolicy": `retry_on num_retries per_try_timeout
		per_try_idle_timeout retriable_status_codes retry_back_off
		retry_host_predicate host_selection_retry_max_attempts`,
	"envoy.config.route.v3.RetryPolicy.RetryHostPredicate": `name typed_config`,
	"envoy.config.route.v3.RetryPolicy.RetryBackOff":       `base_interval max_interval`,
	"envoy.config.route.v3.RedirectAction": `https_redirect scheme_redirect
		host_redirect port_redirect path_redirect prefix_rewrite regex_rewrite
		response_code strip_query`,
	"envoy.config.route.v3.DirectResponseAction": `status body`,
	"envoy.config.core.v3.DataSource":            `filename inline_bytes inline_string`,
	"envoy.config.core.v3.HeaderValueOption":     `header append append_action keep_empty_value`,
	"envoy.config.core.v3.HeaderValue":           `key value raw_value`,
}

var supported = config.NewSupport(supportedFields)

// checkSupported rejects the first populated field Compile does not
// implement.
func checkSupported(m protoreflect.Message, path string) error {
	if err := supported.Check(m.Interface()); err != nil {
		if path != "" {
			return config.At(path, err)
		}
		return err
	}
	return nil
}

// joinPath appends a field name to a dotted field path.
func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// indexPath appends a field name and a list index to a field path.
func indexPath(path, field string, i int) string {
	return fmt.Sprintf("%s[%d]", joinPath(path, field), i)
}
