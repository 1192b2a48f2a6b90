package provider

import (
	"context"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// tenantSetting is one of a tenant's singleton settings at /v1/tenants/{tenant}/{segment}: set and
// changed with PUT, read with GET, removed with DELETE. M is the Terraform model, J the API's JSON.
type tenantSetting[M any, J any] struct {
	client      *client
	typeName    string
	segment     string
	description string
	attributes  map[string]schema.Attribute
	tenant      func(*M) string
	toJSON      func(*M) J
	fromJSON    func(*M, J)
}

func (r *tenantSetting[M, J]) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_" + r.typeName
}

func (r *tenantSetting[M, J]) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	attributes := map[string]schema.Attribute{
		"tenant": schema.StringAttribute{Required: true, PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
	}
	for k, v := range r.attributes {
		attributes[k] = v
	}
	resp.Schema = schema.Schema{Description: r.description, Attributes: attributes}
}

func (r *tenantSetting[M, J]) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (r *tenantSetting[M, J]) path(m *M) string {
	return "/v1/tenants/" + r.tenant(m) + "/" + r.segment
}

// put stores the plan and records what the control plane answered (defaults filled in).
func (r *tenantSetting[M, J]) put(ctx context.Context, plan *M) error {
	var stored J
	if err := r.client.call(ctx, http.MethodPut, r.path(plan), r.toJSON(plan), &stored); err != nil {
		return err
	}
	r.fromJSON(plan, stored)
	return nil
}

func (r *tenantSetting[M, J]) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan M
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.put(ctx, &plan); err != nil {
		resp.Diagnostics.AddError("Cannot set the tenant's "+r.typeName, err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *tenantSetting[M, J]) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state M
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var stored J
	err := r.client.call(ctx, http.MethodGet, r.path(&state), nil, &stored)
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the tenant's "+r.typeName, err.Error())
		return
	}
	r.fromJSON(&state, stored)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *tenantSetting[M, J]) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan M
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.put(ctx, &plan); err != nil {
		resp.Diagnostics.AddError("Cannot change the tenant's "+r.typeName, err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *tenantSetting[M, J]) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state M
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if !resp.Diagnostics.HasError() {
		deleteAt(ctx, r.client, r.path(&state), r.typeName, &resp.Diagnostics)
	}
}

// ImportState takes the tenant id.
func (r *tenantSetting[M, J]) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("tenant"), req.ID)...)
}

// `omnisql_tenant_oidc`: the OIDC issuer whose tokens sign the tenant's principals in.
type oidcModel struct {
	Tenant         types.String `tfsdk:"tenant"`
	Issuer         types.String `tfsdk:"issuer"`
	Audience       types.String `tfsdk:"audience"`
	PrincipalClaim types.String `tfsdk:"principal_claim"`
	GroupsClaim    types.String `tfsdk:"groups_claim"`
}

type oidcJSON struct {
	Issuer         string `json:"issuer"`
	Audience       string `json:"audience"`
	PrincipalClaim string `json:"principal_claim"`
	GroupsClaim    string `json:"groups_claim"`
}

func newTenantOidcResource() resource.Resource {
	return &tenantSetting[oidcModel, oidcJSON]{
		typeName:    "tenant_oidc",
		segment:     "oidc",
		description: "The OIDC issuer a tenant trusts: its JWTs sign principals in (Flight SQL: any principal the claims name, with the token's groups; admin API: existing principals).",
		attributes: map[string]schema.Attribute{
			"issuer":          schema.StringAttribute{Required: true, Description: "The tokens' `iss` (https)."},
			"audience":        schema.StringAttribute{Required: true, Description: "The `aud` tokens must name."},
			"principal_claim": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("sub")},
			"groups_claim":    schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("groups")},
		},
		tenant: func(m *oidcModel) string { return m.Tenant.ValueString() },
		toJSON: func(m *oidcModel) oidcJSON {
			return oidcJSON{m.Issuer.ValueString(), m.Audience.ValueString(), m.PrincipalClaim.ValueString(), m.GroupsClaim.ValueString()}
		},
		fromJSON: func(m *oidcModel, j oidcJSON) {
			m.Issuer, m.Audience = types.StringValue(j.Issuer), types.StringValue(j.Audience)
			m.PrincipalClaim, m.GroupsClaim = types.StringValue(j.PrincipalClaim), types.StringValue(j.GroupsClaim)
		},
	}
}

// `omnisql_tenant_opa`: the tenant's own OPA server, which decides instead of its stored policies.
type opaModel struct {
	Tenant       types.String `tfsdk:"tenant"`
	URL          types.String `tfsdk:"url"`
	Path         types.String `tfsdk:"path"`
	TimeoutMs    types.Int64  `tfsdk:"timeout_ms"`
	CacheSeconds types.Int64  `tfsdk:"cache_seconds"`
}

type opaJSON struct {
	URL          string `json:"url"`
	Path         string `json:"path"`
	TimeoutMs    int64  `json:"timeout_ms"`
	CacheSeconds int64  `json:"cache_seconds"`
}

func newTenantOpaResource() resource.Resource {
	return &tenantSetting[opaModel, opaJSON]{
		typeName:    "tenant_opa",
		segment:     "opa",
		description: "The tenant's own OPA server: data planes ask it, one batched request per query, instead of evaluating the stored policies (they ask only servers their operator allows).",
		attributes: map[string]schema.Attribute{
			"url":           schema.StringAttribute{Required: true, Description: "e.g. http://opa.policy.svc:8181"},
			"path":          schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("omnisql/batch")},
			"timeout_ms":    schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(500)},
			"cache_seconds": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(60)},
		},
		tenant: func(m *opaModel) string { return m.Tenant.ValueString() },
		toJSON: func(m *opaModel) opaJSON {
			return opaJSON{m.URL.ValueString(), m.Path.ValueString(), m.TimeoutMs.ValueInt64(), m.CacheSeconds.ValueInt64()}
		},
		fromJSON: func(m *opaModel, j opaJSON) {
			m.URL, m.Path = types.StringValue(j.URL), types.StringValue(j.Path)
			m.TimeoutMs, m.CacheSeconds = types.Int64Value(j.TimeoutMs), types.Int64Value(j.CacheSeconds)
		},
	}
}
