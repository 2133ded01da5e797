"""The admin for workflow instances: a list to filter and search, a page per instance, actions.

Nothing is added, changed or deleted here: instances change only through the client,
as workers see them. Each action (cancel, pause, unpause, retry from a step, send a
signal) has a permission of its own; a staff user with none of them sees the list and
the pages, and no action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from sayiir_core import InstanceNotFoundError, InvalidStateError, Status
from sayiir_django import _admin_pages as pages
from sayiir_django._admin_dates import InstanceListQuerySet
from sayiir_django._records import created_timestamp
from sayiir_django.client import DjangoWorkflowClient, get_client
from sayiir_django.conf import sayiir_settings
from sayiir_django.forms import RetryFromForm, SignalForm
from sayiir_django.models import WorkflowInstance
from sayiir_django.registry import registry

# The list needs none of the payloads: leaving them out keeps each page one small query.
_LIST_DEFERRED = ("input", "output", "error", "control")
_STEP_KINDS = frozenset({"task", "delay", "await_signal"})


if TYPE_CHECKING:  # generic in django-stubs only
    _ModelAdmin = admin.ModelAdmin[WorkflowInstance]
else:
    _ModelAdmin = admin.ModelAdmin


class WorkflowFilter(admin.SimpleListFilter):
    """The workflow ids of the project's workflows.py, plus any stored ones selected."""

    title = "workflow"
    parameter_name = "workflow_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # From the registry, not a DISTINCT over the table: free at any table size.
        known = sorted(registry().workflows)
        current = self.value()
        if current and current not in known:
            known.append(current)
        return [(workflow_id, workflow_id) for workflow_id in known]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(workflow_id=value) if value else queryset


@admin.register(WorkflowInstance)
class WorkflowInstanceAdmin(_ModelAdmin):
    list_display = (
        "instance_id",
        "status_label",
        "workflow_id",
        "current_step",
        "attempt",
        "created_text",
        "updated_text",
        "duration_text",
    )
    list_filter = ("status", WorkflowFilter)
    date_hierarchy = "created"
    search_fields = ("instance_id",)
    search_help_text = "Search by instance id, or the start of one."
    ordering = ("-id",)
    list_per_page = 50
    # No COUNT(*) of the whole table on every page.
    show_full_result_count = False
    actions = [
        "cancel_instances",
        "pause_instances",
        "unpause_instances",
        "retry_instances",
        "signal_instances",
    ]

    # -- read-only --------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance], search_term: str
    ) -> tuple[QuerySet[WorkflowInstance], bool]:
        # An id prefix, case-sensitive as ids are: the unique index on instance_id serves
        # it (on PostgreSQL its varchar_pattern_ops twin), where the default "contains"
        # scanned the whole table, three times per page (rows, count, date hierarchy).
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(instance_id__startswith=term), False

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowInstance]:
        # What ModelAdmin.get_queryset builds, on the class whose date hierarchy probes
        # the index on "created" instead of scanning the rows (see _admin_dates).
        queryset = InstanceListQuerySet(WorkflowInstance, using=sayiir_settings().database)
        ordering = self.get_ordering(request)
        if ordering:
            queryset = queryset.order_by(*ordering)
        return queryset.defer(*_LIST_DEFERRED)

    # -- list columns -----------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: WorkflowInstance) -> SafeString:
        return pages.badge(Status(obj.status).reported)

    @admin.display(description="created", ordering="created")
    def created_text(self, obj: WorkflowInstance) -> str:
        return _moment(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated_text(self, obj: WorkflowInstance) -> str:
        return _moment(obj.updated_at)

    @admin.display(description="duration")
    def duration_text(self, obj: WorkflowInstance) -> str:
        duration = obj.duration
        if duration is None:
            return "—"
        seconds = duration.total_seconds()
        if seconds < 60:
            return f"{seconds:.1f} s"
        minutes, seconds = divmod(int(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"

    # -- the instance page ------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        history = path(
            "<path:object_id>/history/all/",
            self.admin_site.admin_view(self.full_history_view),
            name="sayiir_django_workflowinstance_full_history",
        )
        return [history, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        instance = self._instance(request, object_id)
        config = sayiir_settings()
        limit = config.admin_payload_chars
        rows, total = pages.history_rows(instance, config.admin_history_limit)
        status = _client().status(instance.instance_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Workflow instance {instance.instance_id}",
            "instance": instance,
            "status": status,
            "badge": pages.badge(status.status),
            "fields": pages.describe_control(instance),
            "input": pages.Payload.of(instance.input, limit),
            "output": pages.Payload.of(instance.output, limit),
            "error": pages.error_text(instance, limit),
            "history": rows,
            "history_total": total,
            "history_cut": total > len(rows) and total > config.admin_history_limit,
            "history_url": reverse(
                "admin:sayiir_django_workflowinstance_full_history", args=[instance.pk]
            ),
            "checkpoints": pages.checkpoint_rows(instance, limit),
            "graph": pages.graph(instance, status),
        }
        return TemplateResponse(request, "sayiir_django/instance.html", context)

    def full_history_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        instance = self._instance(request, object_id)
        rows, total = pages.history_rows(instance, None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"History of {instance.instance_id}",
            "instance": instance,
            "history": rows,
            "history_total": total,
        }
        return TemplateResponse(request, "sayiir_django/history.html", context)

    def _instance(self, request: HttpRequest, object_id: str) -> WorkflowInstance:
        if not self.has_view_permission(request):
            raise PermissionDenied
        instance = self.get_object(request, object_id)
        if instance is None:
            raise Http404(f"no workflow instance with key {object_id!r}")
        # The page shows the payloads the list leaves out.
        instance.refresh_from_db(fields=list(_LIST_DEFERRED))
        return instance

    # -- permissions of the actions ---------------------------------------------------

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return _may(request, "cancel")

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return _may(request, "pause")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return _may(request, "retry")

    def has_signal_permission(self, request: HttpRequest) -> bool:
        return _may(request, "signal")

    # -- actions ----------------------------------------------------------------------

    @admin.action(description="Cancel selected instances", permissions=["cancel"])
    def cancel_instances(self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]) -> None:
        by = _who(request)
        self._apply(
            request,
            queryset,
            "cancelled",
            lambda client, iid: client.cancel(
                iid, reason="cancelled in the admin", cancelled_by=by
            ),
        )

    @admin.action(description="Pause selected instances", permissions=["pause"])
    def pause_instances(self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]) -> None:
        by = _who(request)
        paused = {Status.PAUSED.value}
        self._apply(
            request,
            queryset.exclude(status__in=paused),
            "paused",
            lambda client, iid: client.pause(iid, reason="paused in the admin", paused_by=by),
            skipped=queryset.filter(status__in=paused).count(),
        )

    @admin.action(description="Unpause selected instances", permissions=["pause"])
    def unpause_instances(self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]) -> None:
        self._apply(request, queryset, "unpaused", lambda client, iid: client.unpause(iid))

    @admin.action(description="Retry selected instances from a step…", permissions=["retry"])
    def retry_instances(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]
    ) -> HttpResponse | None:
        steps = _steps_of(queryset)
        form = RetryFromForm(request.POST if "apply" in request.POST else None, steps=steps)
        if form.is_bound and form.is_valid():
            step = form.cleaned_data["step"]
            self._apply(
                request,
                queryset,
                f"set to run again from {step}",
                lambda client, iid: client.retry_from(iid, step),
            )
            return None
        return self._action_form(request, queryset, form, "retry_instances", "Retry from a step")

    @admin.action(description="Send a signal to selected instances…", permissions=["signal"])
    def signal_instances(
        self, request: HttpRequest, queryset: QuerySet[WorkflowInstance]
    ) -> HttpResponse | None:
        form = SignalForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            name, payload = form.cleaned_data["name"], form.cleaned_data["payload"]
            self._apply(
                request,
                queryset,
                f"sent signal “{name}”",
                lambda client, iid: client.send_signal(iid, name, payload),
            )
            return None
        return self._action_form(request, queryset, form, "signal_instances", "Send a signal")

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[WorkflowInstance],
        done_text: str,
        change: Callable[[DjangoWorkflowClient, str], object],
        *,
        skipped: int = 0,
    ) -> None:
        """Apply ``change`` to each eligible instance; report what was done and skipped."""
        client = _client()
        done, reasons = 0, []
        for instance_id in queryset.values_list("instance_id", flat=True):
            try:
                change(client, instance_id)
            except (InvalidStateError, InstanceNotFoundError) as exc:
                skipped += 1
                reasons.append(str(exc))
                continue
            done += 1
        level = messages.SUCCESS if done else messages.WARNING
        text = f"{done} instance{'s' if done != 1 else ''} {done_text}"
        if skipped:
            text += f"; {skipped} skipped"
            if reasons:
                text += f" ({reasons[0]}{'…' if len(reasons) > 1 else ''})"
        self.message_user(request, text + ".", level)

    def _action_form(
        self,
        request: HttpRequest,
        queryset: QuerySet[WorkflowInstance],
        form: Any,
        action: str,
        title: str,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "form": form,
            "action": action,
            "instances": list(queryset.values_list("pk", "instance_id")[:100]),
            "count": queryset.count(),
            "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, "sayiir_django/action_form.html", context)


def _client() -> DjangoWorkflowClient:
    return get_client(sayiir_settings().database)


def _may(request: HttpRequest, action: str) -> bool:
    """Whether the user holds the permission of ``action`` (see ``WorkflowInstance.Meta``)."""
    has_perm = getattr(request.user, "has_perm", None)
    return bool(has_perm and has_perm(f"sayiir_django.{action}_workflowinstance"))


def _moment(seconds: float) -> str:
    """A time in the project's time zone, compact enough for a list column."""
    return localtime(created_timestamp(seconds)).strftime("%Y-%m-%d %H:%M:%S")


def _who(request: HttpRequest) -> str:
    user = request.user
    return f"admin:{user.get_username()}" if user.is_authenticated else "admin"


def _steps_of(queryset: QuerySet[WorkflowInstance]) -> list[str]:
    """The steps a retry can start from, for the workflows of the selected instances."""
    found = registry().workflows
    steps: list[str] = []
    for workflow_id in queryset.order_by().values_list("workflow_id", flat=True).distinct():
        workflow = found.get(workflow_id)
        if workflow is None:
            continue
        steps.extend(
            node.id
            for node in workflow.iter_nodes()
            if node.kind in _STEP_KINDS and node.id not in steps
        )
    return steps
