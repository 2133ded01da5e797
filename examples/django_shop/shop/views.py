"""Two views: place an order (its checkout is submitted in the same transaction), see it."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from sayiir_django import get_client
from shop.models import Order
from shop.workflows import checkout


@csrf_exempt  # an API for the README's curl; a real shop would authenticate it
@require_POST
def place_order(request: HttpRequest) -> JsonResponse | HttpResponseBadRequest:
    try:
        items = int(request.POST["items"])
    except (KeyError, ValueError):
        return HttpResponseBadRequest("items must be a whole number")
    with transaction.atomic():
        order = Order.objects.create(email=request.POST.get("email", ""), items=items)
        # Written in this transaction: if anything below fails, neither the order nor
        # its checkout exists; once committed, a worker is woken for it.
        get_client().submit(checkout, order.workflow_instance_id, order.pk)
    return JsonResponse({"order": order.pk, "instance": order.workflow_instance_id}, status=201)


@require_GET
def order_status(request: HttpRequest, pk: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=pk)
    status = get_client().status(order.workflow_instance_id)
    return JsonResponse(
        {
            "order": order.pk,
            "order_status": order.status,
            "checkout": status.status,
            "output": status.output,
            "error": status.error,
        }
    )
