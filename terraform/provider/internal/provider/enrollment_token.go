package provider

import (
	"context"
	"net/http"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// enrollmentTokenResource is `omnisql_enrollment_token`: a one-time token a data plane of a region
// enrols with (e.g. fed to a Helm release). Tokens are not listed by the control plane and expire by
// themselves, so destroying one only forgets it.
type enrollmentTokenResource struct{ client *client }

type enrollmentTokenModel struct {
	Region           types.String `tfsdk:"region"`
	ExpiresInSeconds types.Int64  `tfsdk:"expires_in_seconds"`
	ExpiresAt        types.Int64  `tfsdk:"expires_at"`
	Token            types.String `tfsdk:"token"`
}

func newEnrollmentTokenResource() resource.Resource { return &enrollmentTokenResource{} }

func (r *enrollmentTokenResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_enrollment_token"
}

func (r *enrollmentTokenResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A one-time enrollment token for a data plane of a region.",
		Attributes: map[string]schema.Attribute{
			"region": schema.StringAttribute{Required: true, PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"expires_in_seconds": schema.Int64Attribute{Optional: true, Description: "Default one hour.",
				PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace()}},
			"expires_at": schema.Int64Attribute{Computed: true, Description: "Unix milliseconds.",
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()}},
			"token": schema.StringAttribute{Computed: true, Sensitive: true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
		},
	}
}

func (r *enrollmentTokenResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*client); ok {
		r.client = c
	}
}

func (r *enrollmentTokenResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan enrollmentTokenModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	body := map[string]any{"region": plan.Region.ValueString(), "expires_in_seconds": plan.ExpiresInSeconds.ValueInt64Pointer()}
	var created struct {
		ExpiresAt int64   `json:"expires_at"`
		Token     *string `json:"token"`
	}
	if err := r.client.call(ctx, http.MethodPost, "/v1/enrollment-tokens", body, &created); err != nil {
		resp.Diagnostics.AddError("Cannot create the enrollment token", err.Error())
		return
	}
	plan.ExpiresAt = types.Int64Value(created.ExpiresAt)
	plan.Token = types.StringPointerValue(created.Token)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *enrollmentTokenResource) Read(context.Context, resource.ReadRequest, *resource.ReadResponse) {
}

func (r *enrollmentTokenResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("Enrollment tokens cannot change in place", "every attribute replaces the token")
}

func (r *enrollmentTokenResource) Delete(context.Context, resource.DeleteRequest, *resource.DeleteResponse) {
}
